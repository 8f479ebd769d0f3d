//! Writes the seed inputs of every target to `corpus/<target>/<name>`.
//! Run from `fuzz/`: `cargo run --example make_corpus`.

use std::fs;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, name, bytes) in kura_fuzz::seeds() {
        kura_fuzz::run(target, &bytes).expect("seed names a known target");
        let dir = root.join(target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(name), &bytes)?;
        println!("{target}/{name}: {} bytes", bytes.len());
    }
    Ok(())
}
