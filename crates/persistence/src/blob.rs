//! Blob storage for input and result images.

use async_trait::async_trait;
use bytes::Bytes;

/// Errors of a [`BlobStore`].
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No object under that key.
    #[error("blob not found")]
    NotFound,
    /// The key is not a valid relative path (empty, `..`, absolute…).
    #[error("invalid blob key: {0}")]
    InvalidKey(String),
    /// The storage URL is not supported or malformed.
    #[error("unsupported storage url: {0}")]
    UnsupportedUrl(String),
    /// The store failed (I/O, permissions…).
    #[error("blob store failed: {0}")]
    Store(String),
}

/// Where image bytes live. Keys are relative paths like `inputs/task_…/0.jpg`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores `bytes` under `key`, replacing any previous object.
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BlobError>;
    /// Reads the object under `key`.
    async fn get(&self, key: &str) -> Result<Bytes, BlobError>;
    /// Deletes the object under `key`; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), BlobError>;
    /// Writes and deletes a probe object (readiness).
    async fn check_writable(&self) -> Result<(), BlobError>;
}

/// Longest accepted blob key, in bytes: far above our keys
/// (`results/task_<26>/<n>.webp`) and below common file-system path limits.
pub const MAX_KEY_BYTES: usize = 512;

/// Prefix of the probe objects written by [`BlobStore::check_writable`].
const PROBE_PREFIX: &str = ".probe";

/// A [`BlobStore`] over the `object_store` crate. Built from a URL by
/// [`ObjectBlobStore::from_url`] (local directory), or around any
/// `object_store` backend (S3-compatible, in memory…) by [`ObjectBlobStore::new`].
/// Cloning is cheap.
#[derive(Debug, Clone)]
pub struct ObjectBlobStore {
    store: std::sync::Arc<dyn object_store::ObjectStore>,
}

impl ObjectBlobStore {
    /// Wraps an `object_store` backend; keys are used as object paths.
    pub fn new(store: std::sync::Arc<dyn object_store::ObjectStore>) -> Self {
        ObjectBlobStore { store }
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
                "scheme `{}` is not supported; expected file://relative/dir or file:///abs/dir",
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
        Ok(ObjectBlobStore::new(std::sync::Arc::new(local)))
    }
}

/// Checks that `key` is a relative path of plain segments and converts it.
///
/// # Errors
/// [`BlobError::InvalidKey`] for an empty or over-long key, a leading `/`, a
/// backslash, a `.`/`..`/empty segment, or control characters.
fn object_path(key: &str) -> Result<object_store::path::Path, BlobError> {
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
    object_store::path::Path::parse(key).map_err(|e| invalid(&e.to_string()))
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
        let path = object_path(key)?;
        self.store
            .put(&path, bytes.into())
            .await
            .map(|_| ())
            .map_err(store_error)
    }

    async fn get(&self, key: &str) -> Result<Bytes, BlobError> {
        use object_store::ObjectStoreExt;
        let path = object_path(key)?;
        let result = self.store.get(&path).await.map_err(store_error)?;
        result.bytes().await.map_err(store_error)
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        use object_store::ObjectStoreExt;
        let path = object_path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn check_writable(&self) -> Result<(), BlobError> {
        use object_store::ObjectStoreExt;
        let path = object_path(&format!("{PROBE_PREFIX}/{}", ulid::Ulid::generate()))?;
        self.store
            .put(&path, Bytes::from_static(b"probe").into())
            .await
            .map_err(store_error)?;
        self.store.delete(&path).await.map_err(store_error)
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
    fn only_file_urls_are_accepted() {
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
}
