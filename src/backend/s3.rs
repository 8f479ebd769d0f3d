//! S3-compatible object storage backend (AWS S3, Garage, MinIO, Ceph),
//! through opendal. Path-style requests to the endpoint given; credentials
//! from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` or a profile
//! (`AWS_PROFILE`, `~/.aws/credentials`), as the AWS tools read them.
//! Never from the EC2 instance metadata service (169.254.169.254): off
//! EC2 that address hangs or answers someone else, so no credentials is
//! said at once as [`ErrorKind::AccessDenied`] naming what to set.
//! Plain `http://` reaches only a loopback endpoint unless the location
//! allows it ([`check_transport`]).
//!
//! Create-only writes are one `PUT` with `If-None-Match: *`. Whether the
//! store honours that header is checked before the first write of a
//! process; a store that ignores it is written with `HEAD` then `PUT`
//! (format-spec/07-layout-and-writes.md says what that costs). opendal's
//! runtime is a small tokio runtime owned by the backend: callers stay
//! synchronous and may call from many threads at once.

use std::io::Read;
use std::ops::Range;
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::TryStreamExt;
use opendal::Operator;

use super::{Backend, ObjectInfo, check_path};
use crate::error::{Error, ErrorKind, Result};

/// Where an S3 repository is, and how to reach the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Key prefix of every object, without leading or trailing `/`.
    pub prefix: String,
    /// `http(s)://host[:port]`; AWS's own endpoint when `None`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// How long one request may take (the I/O of a read or write: half).
    pub timeout: Duration,
    /// Whether plain `http://` may reach a host that is not loopback
    /// ([`check_transport`]).
    pub insecure_http: bool,
}

impl S3Location {
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// A repository in an S3 bucket.
pub struct S3Backend {
    location: S3Location,
    op: Operator,
    runtime: tokio::runtime::Runtime,
    /// Whether the store refuses a `PUT` with `If-None-Match: *` over an
    /// existing name; found out before the first write.
    conditional_create: OnceLock<bool>,
}

/// Maps an opendal error, naming what was being done.
fn s3_error(context: &str, e: &opendal::Error) -> Error {
    use opendal::ErrorKind as K;
    let kind = match e.kind() {
        K::NotFound => ErrorKind::NotFound,
        K::AlreadyExists | K::ConditionNotMatch => ErrorKind::AlreadyExists,
        K::PermissionDenied => ErrorKind::AccessDenied,
        K::RangeNotSatisfied => ErrorKind::Corrupt,
        K::ConfigInvalid => ErrorKind::InvalidInput,
        K::RateLimited => ErrorKind::Transient,
        _ if e.is_temporary() => ErrorKind::Transient,
        _ => ErrorKind::Io,
    };
    Error::new(kind, format!("{context}: {e}"))
}

/// Set-up mistakes said before any request: an endpoint that is not a
/// URL, plain http to another machine not allowed, no region anywhere.
fn check_set_up(location: &S3Location) -> Result<()> {
    if let Some(endpoint) = &location.endpoint {
        check_endpoint(endpoint)?;
    }
    check_transport(location)?;
    let region_in_env = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|r| !r.is_empty()));
    if location.region.is_none() && !region_in_env {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{}: no S3 region: give --s3-region (KURA_S3_REGION) or AWS_REGION \
                 (for Garage or MinIO, the region the server is configured with)",
                location.url()
            ),
        ));
    }
    Ok(())
}

/// Refuses an endpoint that is not `http(s)://host[:port][/path]` before
/// any request: a typo is the caller's mistake (exit 1), not an
/// unreachable store (exit 18).
fn check_endpoint(endpoint: &str) -> Result<()> {
    endpoint_parts(endpoint).map(|_| ())
}

/// Whether `endpoint` is `https://`, and its host (an IPv6 address
/// without brackets).
fn endpoint_parts(endpoint: &str) -> Result<(bool, &str)> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidInput,
            format!("not an S3 endpoint (want http(s)://host[:port]): {endpoint:?}"),
        )
    };
    let (https, rest) = match endpoint.strip_prefix("https://") {
        Some(rest) => (true, rest),
        None => (false, endpoint.strip_prefix("http://").ok_or_else(bad)?),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.strip_prefix('[') {
        // [IPv6]:port
        Some(v6) => match v6.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => (h, Some(p.strip_prefix(':').ok_or_else(bad)?)),
            None => return Err(bad()),
        },
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if host_ok && port_ok {
        Ok((https, host))
    } else {
        Err(bad())
    }
}

/// Whether `host` is this machine: `localhost`, 127.0.0.0/8 or `::1`.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Refuses plain `http://` to an endpoint that is not on this machine
/// unless `insecure_http` (`--insecure-http`, `KURA_INSECURE_HTTP`) allows
/// it. Over plain http an observer on the network sees every object name
/// and size, and can replay, delay or withhold requests; the data stays
/// encrypted and authenticated, but nothing says which store answered.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] naming the endpoint and how to allow it
/// (only for an endpoint that parses).
pub fn check_transport(location: &S3Location) -> Result<()> {
    let Some(endpoint) = &location.endpoint else {
        return Ok(()); // AWS's own endpoint: https
    };
    // A malformed endpoint is not this check's to report (exit 1, from
    // `check_endpoint` in `S3Backend::connect`).
    let Ok((https, host)) = endpoint_parts(endpoint) else {
        return Ok(());
    };
    if https || location.insecure_http || is_loopback(host) {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::InvalidInput,
        format!(
            "refusing plain http to the S3 endpoint {endpoint}: only a loopback host \
             (localhost, 127.0.0.0/8, ::1) may be reached without TLS; use https, or \
             give --insecure-http (KURA_INSECURE_HTTP=1) for a network you trust"
        ),
    ))
}

impl S3Backend {
    /// Builds the client and checks, with one listing request, that the
    /// bucket exists and the credentials are accepted: permanent problems
    /// fail here, before any work, with a clear error.
    ///
    /// # Errors
    /// [`ErrorKind::AccessDenied`] (credentials), [`ErrorKind::NotFound`]
    /// (bucket), [`ErrorKind::Unreachable`] (endpoint), or
    /// [`ErrorKind::InvalidInput`] (configuration).
    pub fn connect(location: S3Location) -> Result<Self> {
        // opendal's HTTP transport (reqwest with rustls), once per process.
        static TRANSPORT: std::sync::Once = std::sync::Once::new();
        check_set_up(&location)?;
        TRANSPORT.call_once(opendal::install_default);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kura-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the S3 client runtime", e))?;
        let mut builder = opendal::services::S3::default()
            .bucket(&location.bucket)
            .root(&format!("/{}", location.prefix))
            .disable_ec2_metadata();
        if let Some(endpoint) = &location.endpoint {
            builder = builder.endpoint(endpoint);
        }
        if let Some(region) = &location.region {
            builder = builder.region(region);
        }
        let op = Operator::new(builder)
            .map_err(|e| s3_error(&format!("configuring {}", location.url()), &e))?
            .layer(
                opendal::layers::TimeoutLayer::new()
                    .with_timeout(location.timeout)
                    .with_io_timeout(location.timeout / 2),
            );
        let backend = Self {
            location,
            op,
            runtime,
            conditional_create: OnceLock::new(),
        };
        backend.probe()?;
        Ok(backend)
    }

    fn probe(&self) -> Result<()> {
        let url = self.location.url();
        let listed = self.runtime.block_on(async {
            let mut lister = self.op.lister_with("").limit(1).await?;
            lister.try_next().await
        });
        match listed {
            Ok(_) => Ok(()),
            Err(e) => {
                let text = e.to_string();
                let err = s3_error(&format!("opening {url}"), &e);
                Err(if text.contains("failed to load signing credential") {
                    Error::new(
                        ErrorKind::AccessDenied,
                        format!(
                            "{url}: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                             or AWS_PROFILE for a profile in ~/.aws/credentials"
                        ),
                    )
                } else if text.contains("NoSuchBucket") {
                    Error::new(
                        ErrorKind::NotFound,
                        format!("{url}: the bucket {} does not exist", self.location.bucket),
                    )
                } else if err.kind() == ErrorKind::AccessDenied
                    || text.contains("InvalidAccessKeyId")
                    || text.contains("SignatureDoesNotMatch")
                    || text.contains("AccessDenied")
                {
                    Error::new(
                        ErrorKind::AccessDenied,
                        format!(
                            "{url}: the store refused the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile): {e}"
                        ),
                    )
                } else if matches!(err.kind(), ErrorKind::Transient | ErrorKind::Io) {
                    Error::new(
                        ErrorKind::Unreachable,
                        format!(
                            "{url}: could not reach the store at {}: {e}",
                            self.location.endpoint.as_deref().unwrap_or("AWS")
                        ),
                    )
                } else {
                    err
                })
            }
        }
    }

    fn block_on<T>(&self, f: impl Future<Output = opendal::Result<T>>) -> opendal::Result<T> {
        self.runtime.block_on(f)
    }

    /// Reads `range` of `path` into one buffer with `reserve` bytes set
    /// aside up front: the body's pieces are copied in as they arrive, so
    /// a read holds its bytes once (collecting them and then copying, as
    /// `Operator::read` does, held them twice: with several packs in
    /// flight, 8 MiB each, that was most of a check's memory over S3).
    fn fetch(
        &self,
        path: &str,
        range: impl Into<opendal::BytesRange>,
        reserve: usize,
    ) -> opendal::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(reserve);
        let range = range.into();
        self.block_on(async {
            let reader = self.op.reader(path).await?;
            reader.read_into(&mut out, range).await
        })?;
        Ok(out)
    }

    /// Whether `If-None-Match: *` is honoured: a random name under `locks/`
    /// (which readers ignore) is created twice; the second must fail.
    fn conditional_create(&self) -> Result<bool> {
        if let Some(known) = self.conditional_create.get() {
            return Ok(*known);
        }
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
        let probe = format!("locks/probe-{}", hex::encode(id));
        let outcome = self.block_on(async {
            self.op
                .write_with(&probe, b"probe".to_vec())
                .if_not_exists(true)
                .await?;
            let second = self
                .op
                .write_with(&probe, b"probe".to_vec())
                .if_not_exists(true)
                .await;
            let _ = self.op.delete(&probe).await;
            Ok(second)
        });
        let honoured = match outcome {
            Ok(Ok(_)) => false,
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    opendal::ErrorKind::ConditionNotMatch | opendal::ErrorKind::AlreadyExists
                ) =>
            {
                true
            }
            Ok(Err(e)) | Err(e) => return Err(s3_error("checking conditional writes", &e)),
        };
        if !honoured {
            tracing::warn!(
                "{}: the store ignores If-None-Match; create-only writes check the name first (format-spec/07)",
                self.location.url()
            );
        }
        Ok(*self.conditional_create.get_or_init(|| honoured))
    }
}

impl Backend for S3Backend {
    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        let prefix = format!("{dir}/");
        let entries = self
            .block_on(async { self.op.list_with(&prefix).recursive(true).await })
            .map_err(|e| s3_error(&format!("{}: listing {dir}", self.location.url()), &e))?;
        let mut out: Vec<ObjectInfo> = entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .filter(|e| {
                let path = e.path();
                !path.split('/').any(|part| part.starts_with('.'))
            })
            .map(|e| ObjectInfo {
                path: e.path().to_owned(),
                size: e.metadata().content_length(),
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn read(&self, path: &str, range: Option<Range<u64>>) -> Result<Vec<u8>> {
        let what = format!("{}: reading {path}", self.location.url());
        match range {
            None => self
                .block_on(self.op.read(path))
                .map(|b| b.to_vec())
                .map_err(|e| s3_error(&what, &e)),
            Some(r) => {
                let size = || {
                    self.block_on(self.op.stat(path))
                        .map(|m| m.content_length())
                        .map_err(|e| s3_error(&what, &e))
                };
                let past_end = |size: u64| {
                    Error::corrupt(format!(
                        "{path}: range {}..{} reaches past the end ({size} bytes)",
                        r.start, r.end
                    ))
                };
                if r.start >= r.end {
                    let size = size()?;
                    return if r.start == r.end && r.end <= size {
                        Ok(Vec::new())
                    } else {
                        Err(past_end(size))
                    };
                }
                let len = usize::try_from(r.end - r.start).unwrap_or(usize::MAX);
                let got = match self.fetch(path, r.clone(), len.min(MAX_RESERVE)) {
                    Ok(b) => b,
                    Err(e) if e.kind() == opendal::ErrorKind::NotFound || e.is_temporary() => {
                        return Err(s3_error(&what, &e));
                    }
                    // Stores answer a range past the end in several ways
                    // (416, a short body opendal refuses): the size decides.
                    Err(e) => {
                        let size = size()?;
                        return Err(if r.end > size {
                            past_end(size)
                        } else {
                            s3_error(&what, &e)
                        });
                    }
                };
                if got.len() as u64 != r.end - r.start {
                    return Err(past_end(size()?));
                }
                Ok(got)
            }
        }
    }

    /// A stat (HEAD) first; an object over `limit` is never fetched.
    fn read_at_most(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let what = format!("{}: reading {path}", self.location.url());
        let size = self
            .block_on(self.op.stat(path))
            .map(|m| m.content_length())
            .map_err(|e| s3_error(&what, &e))?;
        if size > limit {
            return Err(super::oversized(path, Some(size), limit));
        }
        let reserve = usize::try_from(size).unwrap_or(usize::MAX).min(MAX_RESERVE);
        let got = self
            .fetch(path, .., reserve)
            .map_err(|e| s3_error(&what, &e))?;
        super::within_limit(path, got, limit)
    }

    fn write(&self, path: &str, data: &mut dyn Read) -> Result<()> {
        let bytes = super::read_source(path, data)?;
        self.put(path, bytes)
    }

    fn write_bytes(&self, path: &str, data: &[u8]) -> Result<()> {
        // opendal sends owned buffers: one copy, made here.
        self.put(path, data.to_vec())
    }

    fn delete(&self, path: &str) -> Result<()> {
        self.block_on(self.op.delete(path))
            .map_err(|e| s3_error(&format!("{}: deleting {path}", self.location.url()), &e))
    }

    fn describe(&self) -> String {
        self.location.url()
    }

    fn concurrency(&self) -> usize {
        8
    }

    fn exclusive_create(&self) -> Result<bool> {
        self.conditional_create()
    }
}

/// The most a read reserves before the body arrives (a pack's limit): a
/// larger claimed size is not trusted with memory up front.
const MAX_RESERVE: usize = crate::format::pack::MAX_PACK_LEN as usize;

impl S3Backend {
    /// Creates `path` with `bytes` (create-only: format-spec/07).
    fn put(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        check_path(path)?;
        let what = format!("{}: writing {path}", self.location.url());
        let exists = |e: Option<opendal::Error>| {
            Error::new(
                ErrorKind::AlreadyExists,
                match e {
                    Some(e) => format!("{path} already exists: {e}"),
                    None => format!("{path} already exists"),
                },
            )
        };
        if !self.conditional_create()? {
            match self.block_on(self.op.stat(path)) {
                Ok(_) => return Err(exists(None)),
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => {}
                Err(e) => return Err(s3_error(&what, &e)),
            }
        }
        match self.block_on(async { self.op.write_with(path, bytes).if_not_exists(true).await }) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    opendal::ErrorKind::ConditionNotMatch | opendal::ErrorKind::AlreadyExists
                ) =>
            {
                Err(exists(Some(e)))
            }
            Err(e) => Err(s3_error(&what, &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{S3Location, check_endpoint, check_transport};

    fn at(endpoint: &str, insecure_http: bool) -> S3Location {
        S3Location {
            bucket: "b".into(),
            prefix: String::new(),
            endpoint: Some(endpoint.into()),
            region: None,
            timeout: Duration::from_secs(1),
            insecure_http,
        }
    }

    #[test]
    fn plain_http_reaches_only_loopback_unless_allowed() {
        for ok in [
            "https://s3.example",
            "http://127.0.0.1:3900",
            "http://127.200.0.1",
            "http://[::1]:3900",
            "http://localhost:3900/",
            "http://LOCALHOST",
        ] {
            assert!(check_transport(&at(ok, false)).is_ok(), "{ok}");
        }
        for refused in [
            "http://10.1.2.3:9",
            "http://s3.example",
            "http://[::2]:3900",
            "http://128.0.0.1",
            "http://localhost.example.com",
        ] {
            let err = check_transport(&at(refused, false)).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput, "{refused}");
            assert!(err.to_string().contains("--insecure-http"), "{err}");
            assert!(check_transport(&at(refused, true)).is_ok(), "{refused}");
        }
    }

    #[test]
    fn endpoints_are_urls_with_a_host() {
        for ok in [
            "http://127.0.0.1:3900",
            "https://s3.eu-central-1.amazonaws.com",
            "http://[::1]:3900",
            "https://minio.example:9000/",
        ] {
            assert!(check_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "127.0.0.1:3900",
            "not a url",
            "http://",
            "http://host:port",
            "http://host:0",
            "ftp://host",
            "http://ho st",
            "http://[::1",
        ] {
            let err = check_endpoint(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput, "{bad}");
        }
    }
}
