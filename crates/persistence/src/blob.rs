//! Blob storage for input and result images: a local directory or any
//! S3-compatible store (AWS S3, Aliyun OSS, MinIO…), through `object_store`.
//!
//! Keys are relative paths: `inputs/<task>/<n>.<ext>` (users' photos, never
//! given a URL) and `results/<task>/<n>.<ext>` (generated images). The URL a
//! client gets for a result is rendered on every read by [`BlobStore::url`],
//! from the store's [`UrlMode`]: a public base URL, or a time-limited presigned
//! URL (S3 only). See `docs/storage.md` for the S3 and Aliyun OSS facts used here.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use object_store::ObjectStore;
use object_store::path::Path;

/// Errors of a [`BlobStore`].
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No object under that key.
    #[error("blob not found")]
    NotFound,
    /// The key is not a valid relative path (empty, `..`, absolute…).
    #[error("invalid blob key: {0}")]
    InvalidKey(String),
    /// The key is private (an input photo): it never gets a URL.
    #[error("blob {0} is private and has no URL")]
    NotPublic(String),
    /// The storage URL or settings are not supported or malformed.
    #[error("unsupported storage configuration: {0}")]
    UnsupportedUrl(String),
    /// The stream being stored failed; nothing was stored. The source error is
    /// the one the stream yielded (downcast it to learn why).
    #[error("the data being stored failed: {0}")]
    Source(#[source] std::io::Error),
    /// The store failed (I/O, permissions, network…).
    #[error("blob store failed: {0}")]
    Store(String),
}

/// A body to store as it arrives ([`BlobStore::put_stream`]).
pub type BlobStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// Where image bytes live, and how clients reach them.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores `bytes` under `key`, replacing any previous object.
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BlobError>;
    /// Stores the chunks of `body` under `key` as they arrive, holding at most
    /// about [`STREAM_PART_BYTES`] × ([`STREAM_MAX_CONCURRENCY`] + 1) bytes
    /// whatever the object's size: small objects go up in one request, larger
    /// ones as a multipart upload. Returns the number of bytes stored. When
    /// `body` yields an error ([`BlobError::Source`]) or the store fails, the
    /// partial upload is aborted and nothing is stored under `key`.
    async fn put_stream(&self, key: &str, body: BlobStream) -> Result<u64, BlobError>;
    /// Reads the object under `key`.
    async fn get(&self, key: &str) -> Result<Bytes, BlobError>;
    /// Deletes the object under `key`; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), BlobError>;
    /// Writes and deletes a probe object (readiness).
    async fn check_writable(&self) -> Result<(), BlobError>;
    /// The URL a client can GET the object under `key` at, rendered now from
    /// the store's [`UrlMode`]: `{base}/{key}` or a presigned URL valid for the
    /// mode's expiry. Only keys under a [`PUBLIC_PREFIXES`] prefix have one:
    /// any other key (an input photo) is [`BlobError::NotPublic`]. Does not
    /// check that the object exists.
    async fn url(&self, key: &str) -> Result<String, BlobError>;
}

/// Longest accepted blob key, in bytes: far above our keys
/// (`results/task_<26>/<n>.webp`) and below common file-system path limits.
pub const MAX_KEY_BYTES: usize = 512;

/// Key prefixes whose objects may be handed to clients as URLs (generated
/// results). Everything else (users' input photos under `inputs/`) stays
/// private in every [`UrlMode`].
pub const PUBLIC_PREFIXES: &[&str] = &["results/"];

/// Buffer and part size of [`BlobStore::put_stream`], bytes: S3's smallest
/// allowed multipart part (5 MiB; every part but the last must be at least this).
pub const STREAM_PART_BYTES: usize = 5 * 1024 * 1024;

/// Parts of one [`BlobStore::put_stream`] upload in flight at once.
pub const STREAM_MAX_CONCURRENCY: usize = 2;

/// Longest presigned-URL lifetime, seconds: SigV4 query signatures are valid
/// for at most 7 days on AWS S3 and on Aliyun OSS (docs/storage.md).
pub const MAX_PRESIGNED_EXPIRY_SECS: u64 = 7 * 24 * 3600;

/// Prefix of the probe objects written by [`BlobStore::check_writable`].
const PROBE_PREFIX: &str = ".probe";

/// Whether `key` may be given a URL (see [`PUBLIC_PREFIXES`]).
pub fn is_public_key(key: &str) -> bool {
    PUBLIC_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// How [`BlobStore::url`] renders URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlMode {
    /// `{base}/{key}`: a CDN, a public bucket, or modelgen's own `/images`
    /// route. `base` has no trailing slash.
    Public {
        /// Absolute (or, for tests, root-relative) URL prefix.
        base: String,
    },
    /// A SigV4 presigned GET URL valid for `expiry` from the moment it is
    /// rendered (S3-compatible stores only; at most [`MAX_PRESIGNED_EXPIRY_SECS`]).
    Presigned {
        /// Lifetime of each URL.
        expiry: Duration,
    },
}

/// How requests name the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// `https://endpoint/bucket/key` (MinIO and most self-hosted servers).
    Path,
    /// `https://bucket.endpoint/key` (AWS S3's default; the only style Aliyun OSS accepts).
    VirtualHosted,
}

/// Where and how to reach an S3-compatible bucket. Built by the service's
/// configuration from `STORAGE_URL=s3://bucket/prefix` and the `AWS_*`
/// variables, or from the earlier service's `OSS_*` variables.
#[derive(Clone)]
pub struct S3Settings {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// Service endpoint without the bucket, e.g. `http://127.0.0.1:9000` or
    /// `https://s3.oss-cn-shenzhen.aliyuncs.com`; `None` is AWS S3 in `region`.
    pub endpoint: Option<String>,
    /// Signing region (`us-east-1`, `cn-shenzhen`…).
    pub region: String,
    /// Access key id; with no keys, credentials come from the environment
    /// (web identity, container or instance metadata), as AWS SDKs do.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
    /// Path or virtual-hosted requests.
    pub addressing: Addressing,
    /// Allow a plain `http://` endpoint.
    pub allow_http: bool,
    /// Endpoint written into presigned URLs when clients reach the store
    /// under another name than modelgen does (e.g. `http://minio:9000`
    /// inside compose, `http://localhost:9000` for a browser); default `endpoint`.
    pub presign_endpoint: Option<String>,
    /// Name resolution override (tests map bucket host names to loopback).
    pub dns_resolver: Option<Arc<dyn object_store::client::DnsResolver>>,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .field("addressing", &self.addressing)
            .field("allow_http", &self.allow_http)
            .field("presign_endpoint", &self.presign_endpoint)
            .finish_non_exhaustive()
    }
}

impl S3Settings {
    /// Settings for `s3://bucket/prefix` with everything else unset (AWS S3,
    /// `us-east-1`, virtual-hosted, credentials from the environment).
    ///
    /// # Errors
    /// [`BlobError::UnsupportedUrl`] for another scheme, a missing or invalid
    /// bucket name, a query or fragment, or a `.`/`..` prefix segment.
    pub fn from_url(url: &str) -> Result<Self, BlobError> {
        let (bucket, prefix) = parse_s3_url(url)?;
        Ok(S3Settings {
            bucket,
            prefix,
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            addressing: Addressing::VirtualHosted,
            allow_http: false,
            presign_endpoint: None,
            dns_resolver: None,
        })
    }

    /// The URL of the bucket's root as requests address it through `endpoint`
    /// (or AWS S3 when `None`), without a trailing slash:
    /// `{endpoint}/{bucket}` (path style) or `{scheme}://{bucket}.{host}` (virtual-hosted).
    ///
    /// # Errors
    /// [`BlobError::UnsupportedUrl`] when the endpoint is not an `http(s)` URL
    /// without path, query or credentials, or virtual-hosted style is asked of
    /// an IP-address endpoint (a bucket cannot be a sub-domain of an IP).
    pub fn bucket_url(&self, endpoint: Option<&str>) -> Result<String, BlobError> {
        let bad = |why: String| BlobError::UnsupportedUrl(why);
        let Some(endpoint) = endpoint else {
            return Ok(match self.addressing {
                Addressing::VirtualHosted => {
                    format!("https://{}.s3.{}.amazonaws.com", self.bucket, self.region)
                }
                Addressing::Path => {
                    format!("https://s3.{}.amazonaws.com/{}", self.region, self.bucket)
                }
            });
        };
        let parsed = url::Url::parse(endpoint)
            .map_err(|e| bad(format!("S3 endpoint `{}`: {e}", shorten(endpoint))))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.query().is_some()
            || parsed.fragment().is_some()
            || !parsed.username().is_empty()
            || parsed.password().is_some()
            || !parsed.path().trim_matches('/').is_empty()
        {
            return Err(bad(format!(
                "S3 endpoint `{}` must be an http(s) URL with a host (and port) only",
                shorten(endpoint)
            )));
        }
        let host = parsed
            .host()
            .ok_or_else(|| bad(format!("S3 endpoint `{}` has no host", shorten(endpoint))))?;
        let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
        match self.addressing {
            Addressing::Path => Ok(format!(
                "{}://{host}{port}/{}",
                parsed.scheme(),
                self.bucket
            )),
            Addressing::VirtualHosted => match host {
                url::Host::Domain(domain) => {
                    // An endpoint that already names the bucket is used as it is.
                    if domain.starts_with(&format!("{}.", self.bucket)) {
                        Ok(format!("{}://{domain}{port}", parsed.scheme()))
                    } else {
                        Ok(format!(
                            "{}://{}.{domain}{port}",
                            parsed.scheme(),
                            self.bucket
                        ))
                    }
                }
                _ => Err(bad(format!(
                    "virtual-hosted-style requests need a host name, not the IP address in `{}`; use path style",
                    shorten(endpoint)
                ))),
            },
        }
    }

    /// The public URL of the `prefix` location when the bucket itself is
    /// readable: `bucket_url` (through `presign_endpoint`, else `endpoint`)
    /// followed by the prefix. The default base of [`UrlMode::Public`] for S3.
    ///
    /// # Errors
    /// As [`S3Settings::bucket_url`].
    pub fn public_base(&self) -> Result<String, BlobError> {
        let endpoint = self
            .presign_endpoint
            .as_deref()
            .or(self.endpoint.as_deref());
        let root = self.bucket_url(endpoint)?;
        Ok(if self.prefix.is_empty() {
            root
        } else {
            format!("{root}/{}", encode_key(&self.prefix))
        })
    }

    fn builder(
        &self,
        endpoint: Option<&str>,
    ) -> Result<object_store::aws::AmazonS3Builder, BlobError> {
        use object_store::aws::AmazonS3Builder;
        let bucket_endpoint = self.bucket_url(endpoint)?;
        if bucket_endpoint.starts_with("http://") && !self.allow_http {
            return Err(BlobError::UnsupportedUrl(
                "the S3 endpoint is plain http://; set AWS_ALLOW_HTTP=true to allow it".into(),
            ));
        }
        // With explicit keys nothing is read from the environment; without them
        // the standard AWS_* credential sources (web identity, container,
        // instance metadata) apply, as in AWS SDKs.
        let mut builder = if self.access_key_id.is_some() || self.secret_access_key.is_some() {
            AmazonS3Builder::new()
        } else {
            AmazonS3Builder::from_env()
        };
        // Objects carry their image type, so browsers and CDNs show them.
        let mut options = object_store::ClientOptions::new()
            .with_content_type_for_suffix("png", "image/png")
            .with_content_type_for_suffix("jpg", "image/jpeg")
            .with_content_type_for_suffix("jpeg", "image/jpeg")
            .with_content_type_for_suffix("webp", "image/webp")
            .with_allow_http(self.allow_http)
            .with_connect_timeout(Duration::from_secs(10))
            .with_timeout(Duration::from_secs(120));
        if let Some(resolver) = &self.dns_resolver {
            options = options.with_dns_resolver(resolver.clone());
        }
        builder = builder
            .with_bucket_name(&self.bucket)
            .with_region(&self.region)
            // object_store takes a virtual-hosted endpoint with the bucket in it.
            .with_endpoint(bucket_endpoint)
            .with_virtual_hosted_style_request(true)
            .with_allow_http(self.allow_http)
            .with_client_options(options);
        if let Some(id) = &self.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &self.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(token) = &self.session_token {
            builder = builder.with_token(token);
        }
        Ok(builder)
    }
}

fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Splits `s3://bucket/prefix/parts` into the bucket and the prefix.
fn parse_s3_url(url: &str) -> Result<(String, String), BlobError> {
    let bad = |why: &str| {
        BlobError::UnsupportedUrl(format!(
            "{why}; expected s3://bucket or s3://bucket/prefix (got `{}`)",
            shorten(url)
        ))
    };
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| bad("not an s3:// URL"))?;
    if rest.contains('?') || rest.contains('#') || rest.contains('@') {
        return Err(bad("no query, fragment or credentials allowed"));
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    // S3 bucket naming rules (3–63 of a-z, 0-9, '.', '-', starting and ending
    // with a letter or digit); Aliyun OSS's are a subset.
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid_bucket {
        return Err(bad("invalid bucket name"));
    }
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty() {
        object_path(prefix).map_err(|_| bad("invalid prefix"))?;
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

/// Percent-encodes each `/`-separated segment of a key for use in a URL path.
fn encode_key(key: &str) -> String {
    key.split('/')
        .map(|segment| {
            url::form_urlencoded::byte_serialize(segment.as_bytes())
                .collect::<String>()
                // form encoding writes spaces as `+`; a path needs `%20`.
                .replace('+', "%20")
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A [`BlobStore`] over the `object_store` crate: a local directory
/// ([`ObjectBlobStore::from_url`]), an S3-compatible bucket
/// ([`ObjectBlobStore::s3`]) or any other backend ([`ObjectBlobStore::new`]).
/// Cloning is cheap.
#[derive(Debug, Clone)]
pub struct ObjectBlobStore {
    store: Arc<dyn ObjectStore>,
    /// Prepended to every key (the `prefix` of `s3://bucket/prefix`).
    prefix: String,
    /// Presigns URLs (S3 only).
    signer: Option<Arc<dyn object_store::signer::Signer>>,
    urls: UrlMode,
}

impl ObjectBlobStore {
    /// Wraps an `object_store` backend; keys are used as object paths. URLs
    /// are `/images/{key}` until [`ObjectBlobStore::with_urls`] says otherwise.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        ObjectBlobStore {
            store,
            prefix: String::new(),
            signer: None,
            urls: UrlMode::Public {
                base: "/images".into(),
            },
        }
    }

    /// A store in a local directory, created when missing:
    /// `file://data/images` (relative to the current directory) or
    /// `file:///var/lib/modelgen/images` (absolute).
    ///
    /// # Errors
    /// [`BlobError::UnsupportedUrl`] for another scheme or an empty path;
    /// [`BlobError::Store`] when the directory cannot be created.
    pub fn from_url(url: &str) -> Result<Self, BlobError> {
        let Some(path) = url.strip_prefix("file://") else {
            let scheme = url.split_once(':').map_or("", |(s, _)| s);
            return Err(BlobError::UnsupportedUrl(format!(
                "scheme `{}` is not supported here; expected file://relative/dir or file:///abs/dir (s3:// is built by ObjectBlobStore::s3)",
                scheme.chars().take(32).collect::<String>()
            )));
        };
        if path.is_empty() || path.contains('?') || path.contains('#') {
            return Err(BlobError::UnsupportedUrl(
                "expected file://relative/dir or file:///abs/dir".into(),
            ));
        }
        std::fs::create_dir_all(path)
            .map_err(|e| BlobError::Store(format!("cannot create {path}: {e}")))?;
        // Automatic cleanup removes directories a delete leaves empty (e.g.
        // `inputs/<task>/` after an idempotent replay discards its inputs).
        let local = object_store::local::LocalFileSystem::new_with_prefix(path)
            .map_err(|e| BlobError::Store(e.to_string()))?
            .with_automatic_cleanup(true);
        Ok(ObjectBlobStore::new(Arc::new(local)))
    }

    /// A store in an S3-compatible bucket, under `settings.prefix`. Nothing is
    /// sent until the first operation ([`BlobStore::check_writable`] is the
    /// readiness probe). URLs are `{public_base}/{key}` until
    /// [`ObjectBlobStore::with_urls`] says otherwise.
    ///
    /// # Errors
    /// [`BlobError::UnsupportedUrl`] for an invalid endpoint, a plain-HTTP
    /// endpoint without `allow_http`, or settings `object_store` refuses.
    pub fn s3(settings: &S3Settings) -> Result<Self, BlobError> {
        let to_err = |e: object_store::Error| BlobError::UnsupportedUrl(e.to_string());
        let store = settings
            .builder(settings.endpoint.as_deref())?
            .build()
            .map_err(to_err)?;
        let store = Arc::new(store);
        // Signing is offline: a second client only matters when clients reach
        // the store under another host name than modelgen does.
        let signer: Arc<dyn object_store::signer::Signer> = match &settings.presign_endpoint {
            Some(public) if Some(public) != settings.endpoint.as_ref() => {
                Arc::new(settings.builder(Some(public))?.build().map_err(to_err)?)
            }
            _ => store.clone(),
        };
        Ok(ObjectBlobStore {
            store,
            prefix: settings.prefix.clone(),
            signer: Some(signer),
            urls: UrlMode::Public {
                base: settings.public_base()?,
            },
        })
    }

    /// Sets how [`BlobStore::url`] renders URLs.
    ///
    /// # Errors
    /// [`BlobError::UnsupportedUrl`] for [`UrlMode::Presigned`] on a store that
    /// cannot presign (a local directory: its images are served by modelgen at
    /// `/images/…`), or an expiry of zero or above [`MAX_PRESIGNED_EXPIRY_SECS`].
    pub fn with_urls(mut self, urls: UrlMode) -> Result<Self, BlobError> {
        if let UrlMode::Presigned { expiry } = &urls {
            if self.signer.is_none() {
                return Err(BlobError::UnsupportedUrl(
                    "presigned URLs need an S3-compatible store (s3:// STORAGE_URL)".into(),
                ));
            }
            if expiry.is_zero() || expiry.as_secs() > MAX_PRESIGNED_EXPIRY_SECS {
                return Err(BlobError::UnsupportedUrl(format!(
                    "presigned URL expiry must be 1 to {MAX_PRESIGNED_EXPIRY_SECS} seconds"
                )));
            }
        }
        if let UrlMode::Public { base } = &urls {
            let base = base.trim_end_matches('/').to_owned();
            self.urls = UrlMode::Public { base };
        } else {
            self.urls = urls;
        }
        Ok(self)
    }

    /// How URLs are rendered.
    pub fn url_mode(&self) -> &UrlMode {
        &self.urls
    }

    /// The object path of `key`: validated, under the prefix.
    fn path(&self, key: &str) -> Result<Path, BlobError> {
        object_path(key)?;
        if self.prefix.is_empty() {
            object_path(key)
        } else {
            Path::parse(format!("{}/{key}", self.prefix)).map_err(|e| {
                BlobError::InvalidKey(format!(
                    "{e}: `{}`",
                    key.chars().take(64).collect::<String>()
                ))
            })
        }
    }
}

/// Checks that `key` is a relative path of plain segments and converts it.
///
/// # Errors
/// [`BlobError::InvalidKey`] for an empty or over-long key, a leading `/`, a
/// backslash, a `.`/`..`/empty segment, or control characters.
fn object_path(key: &str) -> Result<Path, BlobError> {
    let invalid = |why: &str| {
        BlobError::InvalidKey(format!(
            "{why}: `{}`",
            key.chars().take(64).collect::<String>()
        ))
    };
    if key.is_empty() {
        return Err(invalid("empty key"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(invalid("key too long"));
    }
    if key.starts_with('/') {
        return Err(invalid("absolute key"));
    }
    if key.contains('\\') {
        return Err(invalid("backslash in key"));
    }
    if key.chars().any(char::is_control) {
        return Err(invalid("control character in key"));
    }
    if key
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(invalid("empty, `.` or `..` segment"));
    }
    Path::parse(key).map_err(|e| invalid(&e.to_string()))
}

fn store_error(e: object_store::Error) -> BlobError {
    match e {
        object_store::Error::NotFound { .. } => BlobError::NotFound,
        other => BlobError::Store(other.to_string()),
    }
}

#[async_trait]
impl BlobStore for ObjectBlobStore {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        use object_store::ObjectStoreExt;
        let path = self.path(key)?;
        self.store
            .put(&path, bytes.into())
            .await
            .map(|_| ())
            .map_err(store_error)
    }

    async fn put_stream(&self, key: &str, mut body: BlobStream) -> Result<u64, BlobError> {
        use tokio::io::AsyncWriteExt as _;
        let path = self.path(key)?;
        let mut writer = object_store::buffered::BufWriter::with_capacity(
            self.store.clone(),
            path,
            STREAM_PART_BYTES,
        )
        .with_max_concurrency(STREAM_MAX_CONCURRENCY);
        let mut total: u64 = 0;
        while let Some(chunk) = body.next().await {
            let failed = match chunk {
                Ok(chunk) => {
                    total += chunk.len() as u64;
                    match writer.put(chunk).await {
                        Ok(()) => continue,
                        Err(e) => store_error(e),
                    }
                }
                Err(e) => BlobError::Source(e),
            };
            if let Err(e) = writer.abort().await {
                tracing::warn!(error = %e, "could not abort a partial upload");
            }
            return Err(failed);
        }
        writer
            .shutdown()
            .await
            .map_err(|e| BlobError::Store(e.to_string()))?;
        Ok(total)
    }

    async fn get(&self, key: &str) -> Result<Bytes, BlobError> {
        use object_store::ObjectStoreExt;
        let path = self.path(key)?;
        let result = self.store.get(&path).await.map_err(store_error)?;
        result.bytes().await.map_err(store_error)
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        use object_store::ObjectStoreExt;
        let path = self.path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn check_writable(&self) -> Result<(), BlobError> {
        use object_store::ObjectStoreExt;
        let path = self.path(&format!("{PROBE_PREFIX}/{}", ulid::Ulid::generate()))?;
        self.store
            .put(&path, Bytes::from_static(b"probe").into())
            .await
            .map_err(store_error)?;
        self.store.delete(&path).await.map_err(store_error)
    }

    async fn url(&self, key: &str) -> Result<String, BlobError> {
        let path = self.path(key)?;
        if !is_public_key(key) {
            return Err(BlobError::NotPublic(key.chars().take(64).collect()));
        }
        match &self.urls {
            UrlMode::Public { base } => Ok(format!("{base}/{}", encode_key(key))),
            UrlMode::Presigned { expiry } => {
                let signer = self.signer.as_ref().ok_or_else(|| {
                    BlobError::UnsupportedUrl("this store cannot presign URLs".into())
                })?;
                signer
                    .signed_url(object_store::signer::Method::GET, &path, *expiry)
                    .await
                    .map(|u| u.to_string())
                    .map_err(store_error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_plain_relative_paths() {
        assert!(object_path("results/task_x/0.png").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "a\\b",
            "a//b",
            "./a",
            "a/",
            "a\nb",
        ] {
            assert!(
                matches!(object_path(bad), Err(BlobError::InvalidKey(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            object_path(&"a".repeat(MAX_KEY_BYTES + 1)),
            Err(BlobError::InvalidKey(_))
        ));
    }

    #[test]
    fn only_file_urls_are_accepted_by_from_url() {
        for bad in ["s3://bucket/x", "data/images", "file://", "http://x/y"] {
            assert!(
                matches!(
                    ObjectBlobStore::from_url(bad),
                    Err(BlobError::UnsupportedUrl(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn s3_urls_name_a_valid_bucket_and_an_optional_prefix() {
        let s = S3Settings::from_url("s3://media-1/modelgen/prod/").unwrap();
        assert_eq!(
            (s.bucket.as_str(), s.prefix.as_str()),
            ("media-1", "modelgen/prod")
        );
        let s = S3Settings::from_url("s3://media").unwrap();
        assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("media", ""));
        for bad in [
            "s3://",
            "s3://ab",
            "s3://Upper",
            "s3://-x-/p",
            "s3://b_u/p",
            "s3://bucket/a/../b",
            "s3://bucket/p?x=1",
            "s3://user:pw@bucket/p",
            "file://x",
        ] {
            assert!(
                matches!(S3Settings::from_url(bad), Err(BlobError::UnsupportedUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn bucket_urls_follow_the_addressing_style() {
        let mut s = S3Settings::from_url("s3://media/p").unwrap();
        s.region = "eu-west-1".into();
        assert_eq!(
            s.bucket_url(None).unwrap(),
            "https://media.s3.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            s.bucket_url(Some("https://s3.oss-cn-shenzhen.aliyuncs.com"))
                .unwrap(),
            "https://media.s3.oss-cn-shenzhen.aliyuncs.com"
        );
        assert_eq!(
            s.bucket_url(Some("https://media.oss-cn-shenzhen.aliyuncs.com/"))
                .unwrap(),
            "https://media.oss-cn-shenzhen.aliyuncs.com",
            "an endpoint that already names the bucket is kept"
        );
        assert!(matches!(
            s.bucket_url(Some("http://127.0.0.1:9000")),
            Err(BlobError::UnsupportedUrl(_))
        ));
        s.addressing = Addressing::Path;
        assert_eq!(
            s.bucket_url(Some("http://127.0.0.1:9000")).unwrap(),
            "http://127.0.0.1:9000/media"
        );
        assert_eq!(
            s.bucket_url(None).unwrap(),
            "https://s3.eu-west-1.amazonaws.com/media"
        );
        assert_eq!(
            s.public_base().unwrap(),
            "https://s3.eu-west-1.amazonaws.com/media/p"
        );
        for bad in [
            "ftp://x",
            "http://u:p@h",
            "http://h/path",
            "http://h?q",
            "nope",
        ] {
            assert!(s.bucket_url(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_percent_encoded_per_segment() {
        assert_eq!(
            encode_key("results/a b/ü+#.png"),
            "results/a%20b/%C3%BC%2B%23.png"
        );
    }

    #[tokio::test]
    async fn plain_http_endpoints_need_allow_http() {
        let mut s = S3Settings::from_url("s3://media").unwrap();
        s.addressing = Addressing::Path;
        s.endpoint = Some("http://127.0.0.1:9".into());
        s.access_key_id = Some("k".into());
        s.secret_access_key = Some("s".into());
        let err = ObjectBlobStore::s3(&s).unwrap_err().to_string();
        assert!(err.contains("AWS_ALLOW_HTTP"), "{err}");
        s.allow_http = true;
        assert!(ObjectBlobStore::s3(&s).is_ok());
    }

    #[test]
    fn secrets_do_not_print() {
        let mut s = S3Settings::from_url("s3://media").unwrap();
        s.secret_access_key = Some("very-secret".into());
        s.session_token = Some("tok-secret".into());
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("very-secret") && !shown.contains("tok-secret"),
            "{shown}"
        );
    }
}
