//! Runs every file of `corpus/<target>/` and `regressions/<target>/` through
//! its target's checks, without libFuzzer: a stable-toolchain regression test.
//! Run from `fuzz/`: `cargo run --release --example replay`.

use std::fs;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for target in kura_fuzz::TARGETS {
        for dir in ["corpus", "regressions"] {
            let Ok(files) = fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            for file in files {
                let path = file?.path();
                if path.is_file() {
                    kura_fuzz::run(target, &fs::read(&path)?).expect("known target");
                    count += 1;
                }
            }
        }
    }
    println!("replayed {count} inputs, no failures");
    Ok(())
}
