//! Repository locations as users write them: a local path,
//! `sftp://[user@]host[:port]/path`, `kura+ssh://[user@]host[:port]/path`
//! (a repository behind `kura serve`) or `s3://bucket/prefix`
//! (README.md, "Where repositories live").

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::s3::{S3Backend, S3Location};
use super::serve::{DEFAULT_SERVE_COMMAND, ServeBackend, ServeLocation};
use super::sftp::{SftpBackend, SftpLocation};
use super::{Backend, LocalBackend};
use crate::error::{Error, ErrorKind, Result};

/// A parsed repository location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Sftp(SftpLocation),
    /// A repository behind `kura serve`, reached over ssh.
    Serve(ServeLocation),
    S3(S3Location),
}

/// Settings a location string does not carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteOptions {
    /// S3 endpoint URL (`--s3-endpoint`, `KURA_S3_ENDPOINT`).
    pub s3_endpoint: Option<String>,
    /// S3 region (`--s3-region`, `KURA_S3_REGION`).
    pub s3_region: Option<String>,
    /// An ssh configuration file to use instead of `~/.ssh/config`
    /// (`KURA_SSH_CONFIG`; `ssh -F`).
    pub ssh_config: Option<PathBuf>,
    /// How long one request (a whole pack upload included) may take
    /// before it fails as transient and is retried; `None`: [`DEFAULT_IO_TIMEOUT`]
    /// (`--io-timeout`, `KURA_IO_TIMEOUT`).
    pub io_timeout: Option<Duration>,
    /// Whether plain `http://` may reach an S3 endpoint that is not
    /// loopback (`--insecure-http`, `KURA_INSECURE_HTTP`).
    pub insecure_http: bool,
}

/// How long a remote request may take by default.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(120);

impl RemoteOptions {
    fn timeout(&self) -> Duration {
        self.io_timeout.unwrap_or(DEFAULT_IO_TIMEOUT)
    }
}

fn invalid(text: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!("repository location {text:?}: {why}"),
    )
}

impl Location {
    /// Parses `text`. Anything without a `sftp://` or `s3://` scheme is a
    /// local path.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a malformed URL.
    pub fn parse(text: &str, options: &RemoteOptions) -> Result<Self> {
        if let Some(rest) = text.strip_prefix("kura+ssh:") {
            let ssh = parse_ssh_target(text, rest, "kura+ssh")?;
            return Ok(Self::Serve(ServeLocation {
                user: ssh.user,
                host: ssh.host,
                port: ssh.port,
                path: ssh.path,
                config_file: options.ssh_config.clone(),
                serve_command: DEFAULT_SERVE_COMMAND.to_owned(),
                timeout: options.timeout(),
            }));
        }
        if let Some(rest) = text.strip_prefix("sftp://") {
            return parse_sftp(text, rest).map(|loc| {
                Self::Sftp(SftpLocation {
                    config_file: options.ssh_config.clone(),
                    timeout: options.timeout(),
                    ..loc
                })
            });
        }
        if let Some(rest) = text.strip_prefix("sftp:").filter(|r| !r.starts_with("//")) {
            return parse_ssh_target(text, rest, "sftp").map(|loc| {
                Self::Sftp(SftpLocation {
                    config_file: options.ssh_config.clone(),
                    timeout: options.timeout(),
                    ..loc
                })
            });
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid(text, "no bucket name"));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|p| p == "." || p == "..") {
                return Err(invalid(text, "`.` and `..` are not allowed in the prefix"));
            }
            return Ok(Self::S3(S3Location {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
                endpoint: options.s3_endpoint.clone(),
                region: options.s3_region.clone(),
                timeout: options.timeout(),
                insecure_http: options.insecure_http,
            }));
        }
        if text.contains("://") {
            return Err(invalid(
                text,
                "unknown scheme (kura knows local paths, sftp://, kura+ssh:// and s3://)",
            ));
        }
        Ok(Self::Local(PathBuf::from(text)))
    }

    /// Whether reads cost a network round trip (and so are worth caching
    /// and retrying).
    pub fn is_remote(&self) -> bool {
        !matches!(self, Self::Local(_))
    }

    /// Refuses a location whose transport is not protected and not
    /// allowed: plain http to an S3 endpoint that is not loopback
    /// ([`super::s3::check_transport`]). [`Self::open`] checks it too.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] naming the endpoint and the option.
    pub fn check_transport(&self) -> Result<()> {
        match self {
            Self::S3(loc) => super::s3::check_transport(loc),
            Self::Local(_) | Self::Sftp(_) | Self::Serve(_) => Ok(()),
        }
    }

    /// Connects. Remote backends check what they can at once (host, keys,
    /// bucket, credentials, the transport) so that permanent problems fail
    /// early, before any request.
    ///
    /// # Errors
    /// As [`Self::check_transport`], [`SftpBackend::connect`] and
    /// [`S3Backend::connect`].
    pub fn open(&self) -> Result<Arc<dyn Backend>> {
        self.check_transport()?;
        Ok(match self {
            Self::Local(path) => Arc::new(LocalBackend::new(path)),
            Self::Sftp(loc) => Arc::new(SftpBackend::connect(loc.clone())?),
            Self::Serve(loc) => Arc::new(ServeBackend::connect(loc)?),
            Self::S3(loc) => Arc::new(S3Backend::connect(loc.clone())?),
        })
    }

    /// The location as the user would write it.
    pub fn display(&self) -> String {
        match self {
            Self::Local(path) => path.display().to_string(),
            Self::Sftp(loc) => loc.url(),
            Self::Serve(loc) => loc.url(),
            Self::S3(loc) => loc.url(),
        }
    }

    /// Names the `kura` program a `kura+ssh` location runs on the server
    /// (`--serve-command`, `KURA_SERVE_COMMAND`); other locations are
    /// unchanged.
    #[must_use]
    pub fn with_serve_command(mut self, command: Option<&str>) -> Self {
        if let (Self::Serve(loc), Some(command)) = (&mut self, command) {
            command.clone_into(&mut loc.serve_command);
        }
        self
    }
}

/// The ssh target of `scheme://[user@]host[:port]/path` (`rest` is what
/// follows `scheme:`), or of restic's form `scheme:[user@]host:path`, the
/// path relative to the login directory unless it starts with `/`.
fn parse_ssh_target(text: &str, rest: &str, scheme: &str) -> Result<SftpLocation> {
    if let Some(url_rest) = rest.strip_prefix("//") {
        return parse_sftp(text, url_rest);
    }
    let (authority, path) = rest
        .split_once(':')
        .ok_or_else(|| invalid(text, &format!("expected {scheme}:[user@]host:path")))?;
    let path = if let Some(abs) = path.strip_prefix('/') {
        format!("/{abs}")
    } else {
        path.to_owned()
    };
    parse_sftp(text, &format!("{authority}/{path}"))
}

fn parse_sftp(text: &str, rest: &str) -> Result<SftpLocation> {
    let (authority, path) = rest
        .split_once('/')
        .ok_or_else(|| invalid(text, "no path after the host (sftp://host/path)"))?;
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) if !u.is_empty() => (Some(u.to_owned()), h),
        Some(_) => return Err(invalid(text, "empty user name")),
        None => (None, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| invalid(text, "unclosed [ in the host"))?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(invalid(text, "junk after the host")),
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(invalid(text, "no host"));
    }
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| invalid(text, "the port is not a number"))
        })
        .transpose()?;
    // `sftp://host//srv/kura` is absolute, `sftp://host/kura` relative to
    // the login directory.
    let path = path.trim_end_matches('/');
    if path.is_empty() || path == "/" {
        return Err(invalid(text, "no repository path"));
    }
    if path.split('/').any(|p| p == "." || p == "..") {
        return Err(invalid(text, "`.` and `..` are not allowed in the path"));
    }
    Ok(SftpLocation {
        user,
        host: host.to_owned(),
        port,
        path: path.to_owned(),
        config_file: None,
        timeout: DEFAULT_IO_TIMEOUT,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Location> {
        Location::parse(text, &RemoteOptions::default())
    }

    fn sftp(user: Option<&str>, host: &str, port: Option<u16>, path: &str) -> Location {
        Location::Sftp(SftpLocation {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
            path: path.to_owned(),
            config_file: None,
            timeout: DEFAULT_IO_TIMEOUT,
        })
    }

    #[test]
    fn sftp_urls() {
        assert_eq!(
            parse("sftp://backup@host.example:2222/kura").unwrap(),
            sftp(Some("backup"), "host.example", Some(2222), "kura")
        );
        assert_eq!(
            parse("sftp://alias//srv/kura/").unwrap(),
            sftp(None, "alias", None, "/srv/kura")
        );
        assert_eq!(
            parse("sftp://[::1]:22/r").unwrap(),
            sftp(None, "::1", Some(22), "r")
        );
        // restic's spelling.
        assert_eq!(
            parse("sftp:backup@vault:/srv/kura").unwrap(),
            sftp(Some("backup"), "vault", None, "/srv/kura")
        );
        assert_eq!(
            parse("sftp:vault:kura").unwrap(),
            sftp(None, "vault", None, "kura")
        );
        assert_eq!(
            parse("sftp:vault").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        for bad in [
            "sftp://host",
            "sftp://host/",
            "sftp:///path",
            "sftp://host:x/p",
            "sftp://@host/p",
            "sftp://host/a/../b",
        ] {
            assert_eq!(
                parse(bad).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{bad}"
            );
        }
    }

    fn served(user: Option<&str>, host: &str, port: Option<u16>, path: &str) -> Location {
        Location::Serve(ServeLocation {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
            path: path.to_owned(),
            config_file: None,
            serve_command: DEFAULT_SERVE_COMMAND.to_owned(),
            timeout: DEFAULT_IO_TIMEOUT,
        })
    }

    #[test]
    fn kura_ssh_locations() {
        assert_eq!(
            parse("kura+ssh://backup@vault:2222//srv/kura/web1").unwrap(),
            served(Some("backup"), "vault", Some(2222), "/srv/kura/web1")
        );
        assert_eq!(
            parse("kura+ssh://vault/kura").unwrap(),
            served(None, "vault", None, "kura")
        );
        assert_eq!(
            parse("kura+ssh:backup@vault:/srv/kura").unwrap(),
            served(Some("backup"), "vault", None, "/srv/kura")
        );
        let named = parse("kura+ssh:vault:kura")
            .unwrap()
            .with_serve_command(Some("/opt/kura/bin/kura"));
        assert!(
            matches!(&named, Location::Serve(l) if l.serve_command == "/opt/kura/bin/kura"),
            "{named:?}"
        );
        assert!(named.is_remote());
        assert_eq!(named.display(), "kura+ssh://vault/kura");
        for bad in [
            "kura+ssh://host",
            "kura+ssh:host",
            "kura+ssh://host/a/../b",
            "kura+ssh:///p",
        ] {
            assert_eq!(
                parse(bad).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{bad}"
            );
        }
    }

    #[test]
    fn s3_urls_and_local_paths() {
        let options = RemoteOptions {
            s3_endpoint: Some("http://127.0.0.1:3900".into()),
            s3_region: Some("garage".into()),
            ssh_config: None,
            io_timeout: Some(Duration::from_secs(7)),
            insecure_http: false,
        };
        assert_eq!(
            Location::parse("s3://bucket/a/b/", &options).unwrap(),
            Location::S3(S3Location {
                bucket: "bucket".into(),
                prefix: "a/b".into(),
                endpoint: options.s3_endpoint.clone(),
                region: options.s3_region.clone(),
                timeout: Duration::from_secs(7),
                insecure_http: false,
            })
        );
        assert!(matches!(parse("s3://bucket").unwrap(), Location::S3(l) if l.prefix.is_empty()));
        assert_eq!(
            parse("s3:///x").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            parse("ftp://x/y").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            parse("/srv/backup").unwrap(),
            Location::Local("/srv/backup".into())
        );
        assert!(!parse("relative/dir").unwrap().is_remote());
    }
}
