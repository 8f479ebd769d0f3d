//! The backend conformance suite on every local backend, and what the
//! fault-injecting backend shows about torn writes.

use std::sync::Arc;

use kura::ErrorKind;
use kura::backend::faulty::FaultPlan;
use kura::backend::{
    Backend, FaultyBackend, LocalBackend, MemoryBackend, RetryBackend, RetryPolicy, conformance,
    write_bytes,
};

#[test]
fn memory_backend_conforms() {
    conformance::run_shared(Arc::new(MemoryBackend::new()));
}

#[test]
fn local_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run_shared(Arc::new(LocalBackend::new(dir.path())));
}

#[test]
fn faulty_backend_without_faults_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let inner = Arc::new(LocalBackend::new(dir.path()));
    conformance::run_shared(Arc::new(FaultyBackend::new(inner)));
}

#[test]
fn local_listing_of_a_missing_repository_fails() {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path().join("nothing-here"));
    assert_eq!(
        backend.list("data").unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

fn torn_write_leaves_nothing(inner: Arc<dyn Backend>) {
    let faulty = FaultyBackend::new(inner.clone());
    faulty.set_plan(FaultPlan {
        tear_at: Some(1),
        ..FaultPlan::default()
    });
    let data = vec![0x5a; 1 << 20];
    assert!(write_bytes(&faulty, "data/ab/torn", &data).is_err());
    assert_eq!(
        inner.read("data/ab/torn", None).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(
        inner.list("data").unwrap().is_empty(),
        "no partial object is listed"
    );
    // The same name can be written whole afterwards.
    faulty.set_plan(FaultPlan::default());
    write_bytes(&faulty, "data/ab/torn", &data).unwrap();
    assert_eq!(inner.read("data/ab/torn", None).unwrap(), data);
}

#[test]
fn torn_write_is_never_visible_local() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    torn_write_leaves_nothing(Arc::new(LocalBackend::new(&root)));
    // Only the finished object is on disk: no temp file was left behind.
    let names: Vec<_> = std::fs::read_dir(root.join("data/ab"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("torn")]);
}

#[test]
fn torn_write_is_never_visible_memory() {
    torn_write_leaves_nothing(Arc::new(MemoryBackend::new()));
}

#[test]
fn crash_plan_fails_every_later_operation() {
    let faulty = FaultyBackend::new(Arc::new(MemoryBackend::new()));
    faulty.set_plan(FaultPlan {
        crash_at: Some(2),
        ..FaultPlan::default()
    });
    write_bytes(&faulty, "x/1", b"a").unwrap();
    assert!(write_bytes(&faulty, "x/2", b"b").is_err());
    assert!(faulty.read("x/1", None).is_err());
    assert!(faulty.crashed());
    faulty.set_plan(FaultPlan {
        fail_lists: true,
        ..FaultPlan::default()
    });
    assert_eq!(faulty.list("x").unwrap_err().kind(), ErrorKind::Transient);
}

#[test]
fn retry_backend_conforms() {
    let inner = Arc::new(MemoryBackend::new());
    conformance::run_shared(Arc::new(RetryBackend::new(inner, RetryPolicy::quick())));
}

#[test]
fn retry_backend_conforms_when_every_third_operation_fails() {
    // Lost acknowledgements included: every third write is stored and
    // then reported failed, and the contract still holds.
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(FaultyBackend::new(Arc::new(LocalBackend::new(dir.path()))));
    faulty.set_plan(FaultPlan {
        fail_every: Some(3),
        lose_acks: true,
        ..FaultPlan::default()
    });
    conformance::run_shared(Arc::new(RetryBackend::new(
        faulty.clone(),
        RetryPolicy::quick(),
    )));
    assert!(faulty.ops() > 30, "faults were injected throughout");
}
