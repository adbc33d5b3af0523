//! The local-directory blob store.

use bytes::Bytes;
use modelgen_persistence::{BlobError, BlobStore, ObjectBlobStore};

fn store() -> (ObjectBlobStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    let store = ObjectBlobStore::from_url(&format!("file://{}", root.display())).unwrap();
    assert!(root.is_dir(), "from_url creates the directory");
    (store, dir)
}

#[tokio::test]
async fn put_get_replace_and_not_found() {
    let (store, dir) = store();
    store
        .put("results/task_x/0.png", Bytes::from_static(b"one"))
        .await
        .unwrap();
    assert_eq!(
        store.get("results/task_x/0.png").await.unwrap(),
        Bytes::from_static(b"one")
    );
    assert!(
        dir.path().join("images/results/task_x/0.png").is_file(),
        "keys are paths under the root"
    );
    store
        .put("results/task_x/0.png", Bytes::from_static(b"two"))
        .await
        .unwrap();
    assert_eq!(
        store.get("results/task_x/0.png").await.unwrap(),
        Bytes::from_static(b"two")
    );
    assert!(matches!(
        store.get("results/task_x/missing.png").await,
        Err(BlobError::NotFound)
    ));
}

#[tokio::test]
async fn delete_removes_and_tolerates_missing_objects() {
    let (store, dir) = store();
    store
        .put("inputs/t/0.png", Bytes::from_static(b"x"))
        .await
        .unwrap();
    store.delete("inputs/t/0.png").await.unwrap();
    assert!(!dir.path().join("images/inputs/t/0.png").exists());
    assert!(
        !dir.path().join("images/inputs/t").exists(),
        "the emptied directory is removed"
    );
    assert!(dir.path().join("images").is_dir(), "the root stays");
    assert!(matches!(
        store.get("inputs/t/0.png").await,
        Err(BlobError::NotFound)
    ));
    store.delete("inputs/t/0.png").await.unwrap();
    assert!(matches!(
        store.delete("../x").await,
        Err(BlobError::InvalidKey(_))
    ));
}

#[tokio::test]
async fn invalid_keys_are_rejected_before_touching_the_store() {
    let (store, dir) = store();
    for key in ["", "/etc/passwd", "../escape", "a/../../b", "a\\b", "a//b"] {
        assert!(
            matches!(
                store.put(key, Bytes::new()).await,
                Err(BlobError::InvalidKey(_))
            ),
            "{key:?}"
        );
        assert!(
            matches!(store.get(key).await, Err(BlobError::InvalidKey(_))),
            "{key:?}"
        );
    }
    assert!(!dir.path().join("escape").exists());
}

#[tokio::test]
async fn check_writable_leaves_no_probe_behind() {
    let (store, dir) = store();
    store.check_writable().await.unwrap();
    let probes = dir.path().join("images/.probe");
    let leftover = std::fs::read_dir(&probes)
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(leftover, 0);
}

#[test]
fn other_schemes_are_unsupported() {
    for url in [
        "s3://bucket/images",
        "data/images",
        "file://",
        "https://example.test/x",
    ] {
        assert!(
            matches!(
                ObjectBlobStore::from_url(url),
                Err(BlobError::UnsupportedUrl(_))
            ),
            "{url}"
        );
    }
}
