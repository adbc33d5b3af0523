//! Which blob store the configuration names, and how image URLs are written.
//!
//! - `STORAGE_URL=file://dir` (the default `file://data/images`): a local
//!   directory; modelgen serves results itself at `{PUBLIC_BASE_URL}/images/{key}`.
//! - `STORAGE_URL=s3://bucket/prefix`: any S3-compatible store, configured by
//!   the standard `AWS_*` variables (`AWS_ENDPOINT_URL`/`AWS_ENDPOINT`,
//!   `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!   `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`, `AWS_ALLOW_HTTP`).
//! - The earlier service's `OSS_ACCESS_KEY_ID`/`OSS_ACCESS_KEY_SECRET` (with
//!   `OSS_ENDPOINT`, `OSS_BUCKET`) select its Aliyun OSS bucket by themselves,
//!   through OSS's S3-compatible endpoint `s3.oss-{region}.aliyuncs.com`,
//!   virtual-hosted style (the only style OSS accepts; docs/storage.md).
//!
//! URLs are rendered on every read ([`modelgen_persistence::BlobStore::url`]):
//! `IMAGE_URL_MODE=public` writes `{base}/{key}`, `presigned` writes a SigV4
//! URL valid for `IMAGE_URL_EXPIRY` seconds. Input photos never get a URL.

use std::time::Duration;

use modelgen_persistence::{Addressing, S3Settings, UrlMode};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::startup::Role;

/// The default local directory.
pub const DEFAULT_STORAGE_URL: &str = "file://data/images";
/// The earlier service's default OSS endpoint (its `app/config.py`; docs/storage.md).
pub const LEGACY_OSS_ENDPOINT: &str = "oss-cn-shenzhen.aliyuncs.com";
/// The earlier service's default OSS bucket (same source).
pub const LEGACY_OSS_BUCKET: &str = "suitme";

/// How result URLs are handed to clients and callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageUrlMode {
    /// `{PUBLIC_BASE_URL}/…`: permanent, cacheable, readable by anyone who has it.
    Public,
    /// A SigV4 presigned URL that expires after `IMAGE_URL_EXPIRY` seconds (S3 only).
    Presigned,
}

/// The store the configuration names.
#[derive(Debug, Clone)]
pub enum Storage {
    /// A local directory (`file://…`).
    Local {
        /// The `file://` URL.
        url: String,
    },
    /// An S3-compatible bucket.
    S3 {
        /// Where and how.
        settings: Box<S3Settings>,
        /// The default public base when `PUBLIC_BASE_URL` is unset.
        default_public_base: String,
        /// Selected by the earlier service's `OSS_*` variables.
        oss: bool,
    },
}

impl Storage {
    /// A short description for logs and `config check`, without secrets.
    pub fn describe(&self) -> String {
        match self {
            Storage::Local { url } => format!("local directory {url}"),
            Storage::S3 { settings, oss, .. } => format!(
                "{} bucket `{}`{} via {} ({} style)",
                if *oss { "Aliyun OSS" } else { "S3" },
                settings.bucket,
                if settings.prefix.is_empty() {
                    String::new()
                } else {
                    format!(", prefix `{}`", settings.prefix)
                },
                settings
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| format!("AWS S3 {}", settings.region)),
                match settings.addressing {
                    Addressing::Path => "path",
                    Addressing::VirtualHosted => "virtual-hosted",
                }
            ),
        }
    }
}

fn oss_selected(config: &Config) -> bool {
    config.oss_access_key_id.is_some() || config.oss_access_key_secret.is_some()
}

/// Resolves the store named by the configuration.
///
/// # Errors
/// A message naming the variable at fault.
pub fn resolve(config: &Config) -> Result<Storage, String> {
    let url = config.storage_url.as_deref().map(str::trim);
    match url {
        Some(u) if u.starts_with("file://") => Ok(Storage::Local { url: u.to_owned() }),
        Some(u) if u.starts_with("s3://") => {
            let settings = S3Settings::from_url(u).map_err(|e| format!("STORAGE_URL: {e}"))?;
            let aws_given = config.aws_endpoint_url.is_some()
                || config.aws_endpoint.is_some()
                || config.aws_access_key_id.is_some();
            if oss_selected(config) && !aws_given {
                oss(config, settings)
            } else {
                aws(config, settings)
            }
        }
        Some(_) => {
            Err("STORAGE_URL must be file://dir, file:///abs/dir or s3://bucket[/prefix]".into())
        }
        None if oss_selected(config) => {
            let bucket = config.oss_bucket.as_deref().unwrap_or(LEGACY_OSS_BUCKET);
            let settings = S3Settings::from_url(&format!("s3://{bucket}"))
                .map_err(|e| format!("OSS_BUCKET: {e}"))?;
            oss(config, settings)
        }
        None => Ok(Storage::Local {
            url: DEFAULT_STORAGE_URL.into(),
        }),
    }
}

fn aws(config: &Config, mut s: S3Settings) -> Result<Storage, String> {
    s.endpoint = config
        .aws_endpoint_url
        .clone()
        .or_else(|| config.aws_endpoint.clone())
        .map(|e| e.trim_end_matches('/').to_owned());
    s.region = config
        .aws_region
        .clone()
        .or_else(|| config.aws_default_region.clone())
        .unwrap_or_else(|| "us-east-1".into());
    s.access_key_id = config.aws_access_key_id.clone();
    s.secret_access_key = config
        .aws_secret_access_key
        .as_ref()
        .map(|k| k.expose().to_owned());
    s.session_token = config
        .aws_session_token
        .as_ref()
        .map(|k| k.expose().to_owned());
    if s.access_key_id.is_some() != s.secret_access_key.is_some() {
        return Err("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together".into());
    }
    s.addressing = match config.aws_virtual_hosted_style_request {
        Some(true) => Addressing::VirtualHosted,
        Some(false) => Addressing::Path,
        // AWS S3 itself prefers virtual-hosted; self-hosted servers (MinIO…) path style.
        None if s.endpoint.is_some() => Addressing::Path,
        None => Addressing::VirtualHosted,
    };
    s.allow_http = config.aws_allow_http;
    s.presign_endpoint = config.s3_public_endpoint.clone();
    let default_public_base = s
        .public_base()
        .map_err(|e| format!("AWS_ENDPOINT_URL / S3_PUBLIC_ENDPOINT: {e}"))?;
    check_http(&s)?;
    Ok(Storage::S3 {
        settings: Box::new(s),
        default_public_base,
        oss: false,
    })
}

/// The OSS region of an endpoint host `oss-<region>[-internal].aliyuncs.com`.
fn oss_region(host: &str) -> Option<String> {
    let first = host.strip_suffix(".aliyuncs.com")?;
    let region = first.strip_prefix("oss-")?;
    let region = region.strip_suffix("-internal").unwrap_or(region);
    (!region.is_empty() && !region.contains('.')).then(|| region.to_owned())
}

fn oss(config: &Config, mut s: S3Settings) -> Result<Storage, String> {
    let (Some(id), Some(secret)) = (&config.oss_access_key_id, &config.oss_access_key_secret)
    else {
        return Err("OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET go together".into());
    };
    let raw = config
        .oss_endpoint
        .as_deref()
        .unwrap_or(LEGACY_OSS_ENDPOINT)
        .trim()
        .trim_end_matches('/');
    // The earlier service wrote the endpoint without a scheme and used https.
    let (scheme, host) = match raw.split_once("://") {
        Some((scheme, host)) => (scheme, host),
        None => ("https", raw),
    };
    if !matches!(scheme, "http" | "https") || host.is_empty() || host.contains('/') {
        return Err(format!(
            "OSS_ENDPOINT must be a host such as {LEGACY_OSS_ENDPOINT} (got `{}`)",
            raw.chars().take(80).collect::<String>()
        ));
    }
    let region = match (&config.aws_region, oss_region(host)) {
        (Some(r), _) => r.clone(),
        (None, Some(r)) => r,
        (None, None) => {
            return Err(format!(
                "cannot tell the OSS region from OSS_ENDPOINT `{host}` (expected oss-<region>.aliyuncs.com); set AWS_REGION"
            ));
        }
    };
    if config.aws_virtual_hosted_style_request == Some(false) {
        return Err(
            "Aliyun OSS accepts only virtual-hosted-style requests; remove AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false".into(),
        );
    }
    // OSS's S3-compatible API lives on `s3.` + the OSS endpoint (docs/storage.md).
    let s3_host = if host.starts_with("s3.") || !host.ends_with(".aliyuncs.com") {
        host.to_owned()
    } else {
        format!("s3.{host}")
    };
    s.endpoint = Some(format!("{scheme}://{s3_host}"));
    s.region = region;
    s.access_key_id = Some(id.clone());
    s.secret_access_key = Some(secret.expose().to_owned());
    s.session_token = None;
    s.addressing = Addressing::VirtualHosted;
    s.allow_http = scheme == "http" || config.aws_allow_http;
    s.presign_endpoint = config.s3_public_endpoint.clone();
    // Public URLs as the earlier service wrote them: https://{bucket}.{OSS_ENDPOINT}/{key}.
    let root = format!("{scheme}://{}.{host}", s.bucket);
    let default_public_base = match &config.s3_public_endpoint {
        Some(_) => s
            .public_base()
            .map_err(|e| format!("S3_PUBLIC_ENDPOINT: {e}"))?,
        None if s.prefix.is_empty() => root,
        None => format!("{root}/{}", s.prefix),
    };
    check_http(&s)?;
    Ok(Storage::S3 {
        settings: Box::new(s),
        default_public_base,
        oss: true,
    })
}

fn check_http(s: &S3Settings) -> Result<(), String> {
    if s.endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"))
        && !s.allow_http
    {
        return Err("the S3 endpoint is plain http://; set AWS_ALLOW_HTTP=true to allow it".into());
    }
    s.bucket_url(s.endpoint.as_deref())
        .map(|_| ())
        .map_err(|e| format!("AWS_ENDPOINT_URL: {e}"))
}

/// The URL mode for `storage`; `bound_port` is the HTTP port this process
/// listens on (0 without a listener), used for local storage's default base.
///
/// # Errors
/// When `IMAGE_URL_MODE=presigned` is asked of local storage.
pub fn url_mode(config: &Config, storage: &Storage, bound_port: u16) -> Result<UrlMode, String> {
    match (config.image_url_mode, storage) {
        (ImageUrlMode::Public, Storage::Local { .. }) => Ok(UrlMode::Public {
            base: format!("{}/images", config.public_base_url(bound_port)),
        }),
        (ImageUrlMode::Public, Storage::S3 {
            default_public_base, ..
        }) => Ok(UrlMode::Public {
            base: config
                .public_base_url
                .as_deref()
                .map(|b| b.trim_end_matches('/').to_owned())
                .unwrap_or_else(|| default_public_base.clone()),
        }),
        (ImageUrlMode::Presigned, Storage::S3 { .. }) => Ok(UrlMode::Presigned {
            expiry: Duration::from_secs_f64(config.image_url_expiry.clamp(1.0, 604_800.0)),
        }),
        (ImageUrlMode::Presigned, Storage::Local { .. }) => Err(
            "IMAGE_URL_MODE=presigned needs s3:// storage; local images are served by modelgen at /images/ (use public)".into(),
        ),
    }
}

/// Problems that stop startup (part of [`Config::validate`]).
pub fn problems(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    match resolve(config) {
        Ok(storage) => {
            if let Err(e) = url_mode(config, &storage, config.port) {
                problems.push(e);
            }
        }
        Err(e) => problems.push(e),
    }
    let expiry = config.image_url_expiry;
    if !(expiry.is_finite() && (1.0..=604_800.0).contains(&expiry)) {
        problems.push(
            "IMAGE_URL_EXPIRY must be 1 to 604800 seconds (presigned URLs last at most 7 days)"
                .into(),
        );
    }
    if let (Some(a), Some(b)) = (config.image_base64, config.store_image_base64)
        && a != b
    {
        problems.push(
            "IMAGE_BASE64 and STORE_IMAGE_BASE64 are the same setting and disagree; set one".into(),
        );
    }
    if let Some(e) = &config.s3_public_endpoint
        && !matches!(url::Url::parse(e), Ok(u) if matches!(u.scheme(), "http" | "https"))
    {
        problems.push("S3_PUBLIC_ENDPOINT must be an http(s) URL".into());
    }
    problems
}

fn unroutable_host(host: &str) -> bool {
    matches!(host.trim(), "" | "0.0.0.0" | "::" | "[::]")
}

/// Settings that start but would hand out URLs nobody can use, for a process
/// in `role`. Logged as warnings at startup and printed by `config check`.
pub fn warnings(config: &Config, role: Role) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(storage) = resolve(config) else {
        return out;
    };
    match &storage {
        Storage::Local { .. } if config.public_base_url.is_none() => {
            if role == Role::WorkersOnly {
                out.push(format!(
                    "a `serve --workers-only` replica serves no images on its port: the image URLs it puts in callbacks would be http://{}:0/images/…; set PUBLIC_BASE_URL to the API's public address",
                    config.host
                ));
            } else if unroutable_host(&config.host) || config.port == 0 {
                out.push(format!(
                    "image URLs would be http://{}:{}/images/…, which clients cannot reach; set PUBLIC_BASE_URL",
                    config.host, config.port
                ));
            }
        }
        Storage::S3 { settings, oss, .. } => {
            if config.image_url_mode == ImageUrlMode::Public && config.public_base_url.is_none() {
                let internal = *oss
                    && settings
                        .endpoint
                        .as_deref()
                        .is_some_and(|e| e.contains("-internal."));
                if internal {
                    out.push("OSS_ENDPOINT is an internal (VPC) endpoint: public image URLs built from it are reachable only inside Alibaba Cloud; set PUBLIC_BASE_URL (a CDN or the public bucket domain)".into());
                }
            }
            if settings
                .presign_endpoint
                .as_deref()
                .or(settings.endpoint.as_deref())
                .is_some_and(|e| e.contains("://127.") || e.contains("://localhost"))
                && config.public_base_url.is_none()
            {
                out.push("image URLs point at a loopback S3 endpoint; clients on other machines cannot fetch them (set PUBLIC_BASE_URL or S3_PUBLIC_ENDPOINT)".into());
            }
        }
        Storage::Local { .. } => {}
    }
    if let Some(base) = &config.public_base_url
        && let Ok(u) = url::Url::parse(base)
        && u.host_str().is_some_and(unroutable_host)
    {
        out.push(format!(
            "PUBLIC_BASE_URL {base} names an unroutable host; clients cannot fetch image URLs built from it"
        ));
    }
    if oss_selected(config) && matches!(&storage, Storage::Local { .. }) {
        out.push("OSS_* variables are ignored because STORAGE_URL names a local directory".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn oss_config(endpoint: Option<&str>) -> Config {
        Config {
            oss_access_key_id: Some("LTAIexample".into()),
            oss_access_key_secret: Some(Secret::new("oss-secret")),
            oss_endpoint: endpoint.map(str::to_owned),
            ..Config::default()
        }
    }

    #[test]
    fn default_is_the_local_directory() {
        let storage = resolve(&Config::default()).unwrap();
        assert!(matches!(storage, Storage::Local { url } if url == DEFAULT_STORAGE_URL));
    }

    #[test]
    fn oss_variables_alone_select_the_earlier_services_bucket() {
        let storage = resolve(&oss_config(None)).unwrap();
        let Storage::S3 {
            settings,
            default_public_base,
            oss,
        } = storage
        else {
            panic!("expected S3");
        };
        assert!(oss);
        assert_eq!(settings.bucket, "suitme");
        assert_eq!(settings.region, "cn-shenzhen");
        assert_eq!(
            settings.endpoint.as_deref(),
            Some("https://s3.oss-cn-shenzhen.aliyuncs.com")
        );
        assert_eq!(settings.addressing, Addressing::VirtualHosted);
        assert_eq!(
            settings.bucket_url(settings.endpoint.as_deref()).unwrap(),
            "https://suitme.s3.oss-cn-shenzhen.aliyuncs.com"
        );
        assert_eq!(
            default_public_base,
            "https://suitme.oss-cn-shenzhen.aliyuncs.com"
        );
        let internal = resolve(&oss_config(Some("oss-cn-beijing-internal.aliyuncs.com"))).unwrap();
        let Storage::S3 { settings, .. } = internal else {
            panic!("expected S3");
        };
        assert_eq!(settings.region, "cn-beijing");
        assert!(
            !warnings(
                &oss_config(Some("oss-cn-beijing-internal.aliyuncs.com")),
                Role::All
            )
            .is_empty()
        );
    }

    #[test]
    fn oss_refuses_path_style_and_unknown_regions() {
        let mut c = oss_config(None);
        c.aws_virtual_hosted_style_request = Some(false);
        assert!(resolve(&c).unwrap_err().contains("virtual-hosted"));
        let c = oss_config(Some("images.example.com"));
        assert!(resolve(&c).unwrap_err().contains("AWS_REGION"));
        let mut c = oss_config(None);
        c.oss_access_key_secret = None;
        assert!(resolve(&c).unwrap_err().contains("go together"));
    }

    #[test]
    fn s3_url_with_aws_variables() {
        let c = Config {
            storage_url: Some("s3://media/modelgen".into()),
            aws_endpoint_url: Some("http://127.0.0.1:9000/".into()),
            aws_access_key_id: Some("key".into()),
            aws_secret_access_key: Some(Secret::new("secret")),
            aws_allow_http: true,
            ..Config::default()
        };
        let Storage::S3 {
            settings,
            default_public_base,
            ..
        } = resolve(&c).unwrap()
        else {
            panic!("expected S3");
        };
        assert_eq!(
            settings.addressing,
            Addressing::Path,
            "custom endpoints default to path style"
        );
        assert_eq!(default_public_base, "http://127.0.0.1:9000/media/modelgen");
        let plain = Config {
            aws_allow_http: false,
            ..c.clone()
        };
        assert!(resolve(&plain).unwrap_err().contains("AWS_ALLOW_HTTP"));
        let aws = Config {
            storage_url: Some("s3://media".into()),
            aws_region: Some("eu-central-1".into()),
            ..Config::default()
        };
        let Storage::S3 { settings, .. } = resolve(&aws).unwrap() else {
            panic!("expected S3");
        };
        assert_eq!(settings.addressing, Addressing::VirtualHosted);
        assert_eq!(settings.region, "eu-central-1");
    }

    #[test]
    fn url_modes() {
        let local = Config::default();
        let storage = resolve(&local).unwrap();
        assert_eq!(
            url_mode(&local, &storage, 8123).unwrap(),
            UrlMode::Public {
                base: "http://127.0.0.1:8123/images".into()
            }
        );
        let presigned_local = Config {
            image_url_mode: ImageUrlMode::Presigned,
            ..Config::default()
        };
        assert!(url_mode(&presigned_local, &storage, 1).is_err());
        let c = Config {
            storage_url: Some("s3://media".into()),
            public_base_url: Some("https://cdn.example.com/m/".into()),
            ..Config::default()
        };
        let storage = resolve(&c).unwrap();
        assert_eq!(
            url_mode(&c, &storage, 0).unwrap(),
            UrlMode::Public {
                base: "https://cdn.example.com/m".into()
            }
        );
        let p = Config {
            image_url_mode: ImageUrlMode::Presigned,
            image_url_expiry: 90.0,
            ..c
        };
        assert_eq!(
            url_mode(&p, &storage, 0).unwrap(),
            UrlMode::Presigned {
                expiry: Duration::from_secs(90)
            }
        );
    }

    #[test]
    fn conflicting_or_out_of_range_settings_are_problems() {
        let both = Config {
            image_base64: Some(true),
            store_image_base64: Some(false),
            ..Config::default()
        };
        assert!(problems(&both).iter().any(|p| p.contains("IMAGE_BASE64")));
        let agree = Config {
            image_base64: Some(true),
            store_image_base64: Some(true),
            ..Config::default()
        };
        assert!(problems(&agree).is_empty());
        assert!(agree.image_base64_enabled());
        for expiry in [0.0, 604_801.0, f64::NAN] {
            let c = Config {
                image_url_expiry: expiry,
                ..Config::default()
            };
            assert!(
                problems(&c).iter().any(|p| p.contains("IMAGE_URL_EXPIRY")),
                "{expiry}"
            );
        }
        let bad_url = Config {
            storage_url: Some("ftp://x".into()),
            ..Config::default()
        };
        assert!(problems(&bad_url).iter().any(|p| p.contains("STORAGE_URL")));
    }

    #[test]
    fn workers_without_a_public_base_are_warned_about() {
        let c = Config::default();
        assert!(warnings(&c, Role::All).is_empty());
        let w = warnings(&c, Role::WorkersOnly);
        assert!(w.iter().any(|w| w.contains("workers-only")), "{w:?}");
        let exposed = Config {
            host: "0.0.0.0".into(),
            ..Config::default()
        };
        assert!(
            warnings(&exposed, Role::All)
                .iter()
                .any(|w| w.contains("0.0.0.0"))
        );
        let fixed = Config {
            host: "0.0.0.0".into(),
            public_base_url: Some("https://api.example.com".into()),
            ..Config::default()
        };
        assert!(warnings(&fixed, Role::WorkersOnly).is_empty());
    }
}
