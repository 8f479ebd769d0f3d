//! In-memory backend: for tests and as the reference the conformance suite
//! was written against. Atomic by construction (one lock per operation).

use std::collections::BTreeMap;
use std::io::Read;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

use super::{Backend, ObjectInfo, check_path, check_range, oversized};
use crate::error::{Error, ErrorKind, Result};

/// A backend holding every object in a map.
#[derive(Default)]
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn objects(&self) -> MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces an object's bytes in place, bypassing create-only: lets
    /// tests damage a repository.
    pub fn tamper(&self, path: &str, edit: impl FnOnce(&mut Vec<u8>)) {
        let mut objects = self.objects();
        edit(objects.get_mut(path).expect("tampered object exists"));
    }
}

impl Backend for MemoryBackend {
    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        let prefix = format!("{dir}/");
        Ok(self
            .objects()
            .range(prefix.clone()..)
            .take_while(|(path, _)| path.starts_with(&prefix))
            .map(|(path, data)| ObjectInfo {
                path: path.clone(),
                size: data.len() as u64,
            })
            .collect())
    }

    fn read(&self, path: &str, range: Option<Range<u64>>) -> Result<Vec<u8>> {
        let objects = self.objects();
        let data = objects
            .get(path)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("{path}: no such object")))?;
        match range {
            None => Ok(data.clone()),
            Some(r) => {
                check_range(path, &r, data.len() as u64)?;
                Ok(data[r.start as usize..r.end as usize].to_vec())
            }
        }
    }

    fn read_at_most(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let objects = self.objects();
        let data = objects
            .get(path)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("{path}: no such object")))?;
        if data.len() as u64 > limit {
            return Err(oversized(path, Some(data.len() as u64), limit));
        }
        Ok(data.clone())
    }

    fn write(&self, path: &str, data: &mut dyn Read) -> Result<()> {
        check_path(path)?;
        let bytes = super::read_source(path, data)?;
        let mut objects = self.objects();
        if objects.contains_key(path) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("{path} already exists"),
            ));
        }
        objects.insert(path.to_owned(), bytes);
        Ok(())
    }

    fn delete(&self, path: &str) -> Result<()> {
        self.objects().remove(path);
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}
