//! How much memory storing a large result takes, measured with a counting
//! allocator (so the figure is exact heap bytes, not a noisy RSS reading).
//! Its own test binary because the allocator is process-wide; one test only.
//!
//! For a local directory and the real S3 server (`s3s-fs`), it stores a
//! 10 MB and a 30 MB body:
//! - streamed: chunks produced on the fly go through `put_stream`;
//! - downloaded: the body is fetched over HTTP with reqwest (as the engine
//!   fetches results) and streamed into another key;
//! - buffered (for comparison, the way results were stored before): every
//!   chunk collected into one buffer, then `put`.
//!
//! (`peak_alloc` counts every allocation of the process; nothing else runs
//! in this binary.) It prints the peak heap growth of each, and asserts that streaming holds
//! at most a small multiple of 10 MB, and less than the object for 30 MB
//! (the buffer is bounded by the part size, not the object size).

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use modelgen_persistence::s3_server::{S3TestServer, s3_skipped};
use modelgen_persistence::{Addressing, BlobStore, ObjectBlobStore, UrlMode};
use peak_alloc::PeakAlloc;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

const MB: usize = 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// Runs `work` and returns the peak heap growth above the level at its start.
async fn peak_growth<F: std::future::Future<Output = ()>>(work: F) -> usize {
    let start = HEAP.current_usage();
    HEAP.reset_peak_usage();
    work.await;
    HEAP.peak_usage().saturating_sub(start)
}

/// `len` bytes made chunk by chunk as the consumer asks for them.
fn lazy_body(len: usize) -> modelgen_persistence::BlobStream {
    futures_util::stream::iter((0..len).step_by(CHUNK))
        .map(move |at| Ok(Bytes::from(vec![(at / CHUNK) as u8; CHUNK.min(len - at)])))
        .boxed()
}

fn mb(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / MB as f64)
}

#[test]
fn streaming_a_large_result_holds_a_bounded_buffer() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = ObjectBlobStore::from_url(&format!("file://{}", dir.path().display())).unwrap();
    let server = (!s3_skipped()).then(S3TestServer::start);
    let mut stores = vec![("local", local)];
    if let Some(server) = &server {
        let bucket = server.create_bucket("memory");
        let s3 = ObjectBlobStore::s3(&server.settings(&bucket, "", Addressing::Path))
            .unwrap()
            .with_urls(UrlMode::Presigned {
                expiry: std::time::Duration::from_secs(600),
            })
            .unwrap();
        stores.push(("s3", s3));
    }
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    rt.block_on(async {
        for (name, store) in &stores {
            for size in [10 * MB, 30 * MB] {
                let streamed = peak_growth(async {
                    let n = store
                        .put_stream("results/mem/streamed.png", lazy_body(size))
                        .await
                        .unwrap();
                    assert_eq!(n, size as u64);
                })
                .await;
                let buffered = peak_growth(async {
                    let mut all = BytesMut::new();
                    let mut body = lazy_body(size);
                    while let Some(chunk) = body.next().await {
                        all.extend_from_slice(&chunk.unwrap());
                    }
                    store
                        .put("results/mem/buffered.png", all.freeze())
                        .await
                        .unwrap();
                })
                .await;
                let downloaded = if *name == "s3" {
                    let url = store.url("results/mem/streamed.png").await.unwrap();
                    Some(
                        peak_growth(async {
                            let resp = http.get(&url).send().await.unwrap();
                            assert_eq!(resp.status().as_u16(), 200);
                            let body = resp.bytes_stream().map(|c| c.map_err(std::io::Error::other));
                            let n = store
                                .put_stream("results/mem/copied.png", body.boxed())
                                .await
                                .unwrap();
                            assert_eq!(n, size as u64);
                        })
                        .await,
                    )
                } else {
                    None
                };
                println!(
                    "{name}: {} object: streamed peak +{}, download+stream peak {}, buffered peak +{}",
                    mb(size),
                    mb(streamed),
                    downloaded.map_or("n/a".into(), |d| format!("+{}", mb(d))),
                    mb(buffered)
                );
                if size == 10 * MB {
                    assert!(
                        streamed <= 2 * size,
                        "{name}: streaming 10 MB held {} (more than twice the object)",
                        mb(streamed)
                    );
                } else {
                    // Bounded by the part buffer, not the object: less than it.
                    assert!(
                        streamed < size,
                        "{name}: streaming 30 MB held {}: not bounded",
                        mb(streamed)
                    );
                    if let Some(d) = downloaded {
                        assert!(d < size, "{name}: download+stream of 30 MB held {}", mb(d));
                    }
                }
            }
        }
    });
}
