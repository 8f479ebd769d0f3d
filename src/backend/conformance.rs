//! The backend conformance suite: what every [`Backend`] must do. Run it
//! against a fresh, empty backend; it panics with a message on the first
//! violation. Local, memory and every remote backend are tested with it.

use std::io::{self, Read};
use std::sync::Arc;

use super::{Backend, write_bytes};
use crate::error::ErrorKind;

/// Runs every check in turn. Uses objects under `conformance/` only.
///
/// # Panics
/// On the first violation of the backend contract.
pub fn run(backend: &dyn Backend) {
    empty_listing(backend);
    write_read_ranges(backend);
    bounded_reads(backend);
    create_only(backend);
    missing_objects(backend);
    listing_is_recursive_and_exact(backend);
    delete_is_idempotent(backend);
    torn_write_is_invisible(backend);
    large_object(backend);
}

/// As [`run`] for a backend that refuses deletes (an append-only
/// `kura serve`): every check but deleting, then a delete refused as
/// [`ErrorKind::AccessDenied`] naming the append-only rule, the object
/// kept.
///
/// # Panics
/// On the first violation.
pub fn run_append_only(backend: &dyn Backend) {
    empty_listing(backend);
    write_read_ranges(backend);
    bounded_reads(backend);
    create_only(backend);
    missing_objects(backend);
    listing_is_recursive_and_exact(backend);
    torn_write_is_invisible(backend);
    large_object(backend);
    write_bytes(backend, "conformance/kept", b"x").expect("write");
    let err = backend
        .delete("conformance/kept")
        .expect_err("an append-only backend refuses deletes");
    assert_eq!(err.kind(), ErrorKind::AccessDenied, "{err}");
    assert!(err.to_string().contains("append-only"), "{err}");
    assert_eq!(backend.read("conformance/kept", None).expect("kept"), b"x");
}

/// As [`run`], plus racing writers, for backends that can be shared.
/// Racing creates of one name are checked only where the backend says the
/// storage serializes them ([`Backend::exclusive_create`]); elsewhere the
/// racers' outcome is only checked to leave one whole object.
///
/// # Panics
/// On the first violation of the backend contract.
pub fn run_shared(backend: Arc<dyn Backend>) {
    run(backend.as_ref());
    let exclusive = backend
        .exclusive_create()
        .expect("finding out whether creates are exclusive");
    concurrent_create(backend, exclusive);
}

fn empty_listing(b: &dyn Backend) {
    assert!(
        b.list("conformance")
            .expect("listing an empty directory")
            .is_empty()
    );
}

fn write_read_ranges(b: &dyn Backend) {
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    write_bytes(b, "conformance/a/obj1", &data).expect("write");
    assert_eq!(b.read("conformance/a/obj1", None).expect("read"), data);
    assert_eq!(
        b.read("conformance/a/obj1", Some(100..200)).expect("range"),
        &data[100..200]
    );
    assert_eq!(
        b.read("conformance/a/obj1", Some(9_990..10_000))
            .expect("tail"),
        &data[9_990..]
    );
    assert!(
        b.read("conformance/a/obj1", Some(0..0))
            .expect("empty range")
            .is_empty()
    );
    let past = b.read("conformance/a/obj1", Some(9_990..10_001));
    assert_eq!(
        past.expect_err("range past the end").kind(),
        ErrorKind::Corrupt
    );
    write_bytes(b, "conformance/a/empty", b"").expect("empty object");
    assert!(
        b.read("conformance/a/empty", None)
            .expect("read empty")
            .is_empty()
    );
}

/// `read_at_most` gives an object of at most the limit whole, and refuses
/// a longer one as damage naming both sizes (or "longer than" the limit).
fn bounded_reads(b: &dyn Backend) {
    let data: Vec<u8> = (0..1_000u32).map(|i| (i % 253) as u8).collect();
    write_bytes(b, "conformance/bounded", &data).expect("write");
    for limit in [1_000, 1_001, 1 << 20] {
        assert_eq!(
            b.read_at_most("conformance/bounded", limit)
                .expect("within the limit"),
            data
        );
    }
    for limit in [0, 999] {
        let err = b
            .read_at_most("conformance/bounded", limit)
            .expect_err("over the limit");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        let text = err.to_string();
        assert!(text.contains("conformance/bounded"), "{text}");
        assert!(text.contains(&format!("limit of {limit} bytes")), "{text}");
    }
    let missing = b.read_at_most("conformance/none", 10);
    assert_eq!(missing.expect_err("missing").kind(), ErrorKind::NotFound);
    write_bytes(b, "conformance/bounded-empty", b"").expect("empty object");
    assert!(
        b.read_at_most("conformance/bounded-empty", 0)
            .expect("empty")
            .is_empty()
    );
}

fn create_only(b: &dyn Backend) {
    write_bytes(b, "conformance/once", b"first").expect("write");
    let again = write_bytes(b, "conformance/once", b"second");
    assert_eq!(
        again.expect_err("overwrite").kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(b.read("conformance/once", None).expect("read"), b"first");
}

fn missing_objects(b: &dyn Backend) {
    let err = b
        .read("conformance/missing", None)
        .expect_err("missing object");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = b
        .read("conformance/missing", Some(0..1))
        .expect_err("missing object range");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

fn listing_is_recursive_and_exact(b: &dyn Backend) {
    write_bytes(b, "conformance/l/x/1", b"1").expect("write");
    write_bytes(b, "conformance/l/y/22", b"22").expect("write");
    write_bytes(b, "conformance/lz", b"333").expect("write");
    let mut got: Vec<(String, u64)> = b
        .list("conformance/l")
        .expect("list")
        .into_iter()
        .map(|o| (o.path, o.size))
        .collect();
    got.sort();
    let want = vec![
        ("conformance/l/x/1".to_owned(), 1),
        ("conformance/l/y/22".to_owned(), 2),
    ];
    assert_eq!(
        got, want,
        "list returns exactly the objects below the directory"
    );
}

fn delete_is_idempotent(b: &dyn Backend) {
    write_bytes(b, "conformance/d", b"x").expect("write");
    b.delete("conformance/d").expect("delete");
    assert_eq!(
        b.read("conformance/d", None).expect_err("deleted").kind(),
        ErrorKind::NotFound
    );
    b.delete("conformance/d").expect("deleting again succeeds");
    assert!(
        !b.list("conformance")
            .expect("list")
            .iter()
            .any(|o| o.path == "conformance/d")
    );
    write_bytes(b, "conformance/d", b"y").expect("a deleted name can be created again");
}

struct FailingReader {
    left: usize,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "source failed",
            ));
        }
        let n = buf.len().min(self.left);
        buf[..n].fill(0xAB);
        self.left -= n;
        Ok(n)
    }
}

fn torn_write_is_invisible(b: &dyn Backend) {
    let mut reader = FailingReader { left: 100_000 };
    assert!(
        b.write("conformance/torn", &mut reader).is_err(),
        "a failing source fails the write"
    );
    let err = b
        .read("conformance/torn", None)
        .expect_err("torn object is not visible");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        !b.list("conformance")
            .expect("list")
            .iter()
            .any(|o| o.path.contains("torn"))
    );
    write_bytes(b, "conformance/torn", b"whole").expect("the name is still free");
}

fn large_object(b: &dyn Backend) {
    let data: Vec<u8> = (0..(5u32 << 20))
        .map(|i| (i.wrapping_mul(31) >> 7) as u8)
        .collect();
    write_bytes(b, "conformance/large", &data).expect("write large");
    assert_eq!(b.read("conformance/large", None).expect("read large"), data);
    let r = (3u64 << 20) + 5..(4u64 << 20) + 17;
    let got = b
        .read("conformance/large", Some(r.clone()))
        .expect("range of large");
    assert_eq!(got, &data[r.start as usize..r.end as usize]);
}

#[allow(clippy::needless_pass_by_value)] // each thread takes its own clone
fn concurrent_create(b: Arc<dyn Backend>, exclusive: bool) {
    let handles: Vec<_> = (0..8u8)
        .map(|i| {
            let b = Arc::clone(&b);
            std::thread::spawn(move || {
                write_bytes(b.as_ref(), "conformance/race", &[i; 4096]).is_ok()
            })
        })
        .collect();
    let winners = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .filter(|&ok| ok)
        .count();
    if exclusive {
        assert_eq!(winners, 1, "exactly one racing create-only write succeeds");
    } else {
        assert!(winners >= 1, "at least one racing write succeeds");
    }
    let data = b.read("conformance/race", None).expect("read race");
    assert!(
        data.len() == 4096 && data.iter().all(|&x| x == data[0]),
        "the winner's bytes are whole"
    );
}
