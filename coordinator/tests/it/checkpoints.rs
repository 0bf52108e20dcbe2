//! The coordinator as a checkpoint store: chunked uploads and downloads under the job's lease,
//! checked against their header, kept per job (newest two) and removed when the job succeeds.

use coordinator::checkpoints::{CheckpointSettings, sha256_hex};
use sweep_proto::pb;
use sweep_proto::pb::checkpoint_chunk::Part;
use tonic::Code;

use crate::common::*;

fn header(fence: &pb::Fence, epoch: u32, bytes: &[u8]) -> pb::CheckpointHeader {
    pb::CheckpointHeader {
        fence: Some(fence.clone()),
        epoch,
        size: bytes.len() as u64,
        sha256: sha256_hex(bytes),
    }
}

/// The header, then `bytes` in chunks of `chunk` bytes.
fn upload(header: pb::CheckpointHeader, bytes: &[u8], chunk: usize) -> Vec<pb::CheckpointChunk> {
    let mut messages = vec![pb::CheckpointChunk { part: Some(Part::Header(header)) }];
    messages.extend(bytes.chunks(chunk).map(|c| pb::CheckpointChunk { part: Some(Part::Data(c.to_vec())) }));
    messages
}

async fn put(w: &mut Workers, messages: Vec<pb::CheckpointChunk>) -> Result<(), tonic::Status> {
    w.put_checkpoint(tokio_stream::iter(messages)).await.map(|_| ())
}

/// The epoch and bytes of the newest checkpoint no later than `max_epoch`.
async fn get(w: &mut Workers, fence: &pb::Fence, max_epoch: u32) -> Result<(u32, Vec<u8>), tonic::Status> {
    let request = pb::GetCheckpointRequest { fence: Some(fence.clone()), max_epoch };
    let mut stream = w.get_checkpoint(request).await?.into_inner();
    let Some(pb::CheckpointChunk { part: Some(Part::Header(h)) }) = stream.message().await? else {
        panic!("no header first");
    };
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await? {
        let Some(Part::Data(data)) = chunk.part else { panic!("a second header") };
        assert!(data.len() <= 1 << 20, "chunks stay under the message limit");
        bytes.extend(data);
    }
    assert_eq!((bytes.len() as u64, sha256_hex(&bytes)), (h.size, h.sha256));
    Ok((h.epoch, bytes))
}

fn config(dir: &std::path::Path) -> coordinator::Config {
    let checkpoints =
        Some(CheckpointSettings { max_bytes: 8 << 20, ..CheckpointSettings::in_dir(dir.join("ckpt")) });
    coordinator::Config { checkpoints, ..Default::default() }
}

#[tokio::test]
async fn checkpoints_round_trip_in_chunks_and_only_the_lease_holder_may_use_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), config(dir.path())).await;
    let mut sweeps = server.sweeps().await;
    submit(&mut sweeps, spec("ck", &["natural_softmax"], &[0], 20)).await.unwrap();
    let mut w = server.workers().await;
    register(&mut w, "w").await;
    let f = fence(&lease(&mut w, "w").await.unwrap());

    assert_eq!(get(&mut w, &f, 20).await.unwrap_err().code(), Code::NotFound);
    // 2.5 MiB: three chunks, larger than no single message may be.
    let big: Vec<u8> = (0..5 << 19).map(|i: u32| (i % 251) as u8).collect();
    for epoch in [5, 10, 15] {
        let mut bytes = big.clone();
        bytes[0] = epoch as u8;
        put(&mut w, upload(header(&f, epoch, &bytes), &bytes, 1 << 20)).await.unwrap();
    }
    let (epoch, bytes) = get(&mut w, &f, 20).await.unwrap();
    assert_eq!((epoch, bytes.len(), bytes[0], &bytes[1..]), (15, big.len(), 15, &big[1..]));
    assert_eq!(get(&mut w, &f, 14).await.unwrap().0, 10);
    assert_eq!(get(&mut w, &f, 9).await.unwrap_err().code(), Code::NotFound, "epoch 5 was pruned");

    // A stale fence neither reads nor writes.
    let stale = pb::Fence { lease_token: "guess".into(), ..f.clone() };
    assert_eq!(get(&mut w, &stale, 20).await.unwrap_err().code(), Code::FailedPrecondition);
    let err = put(&mut w, upload(header(&stale, 16, b"x"), b"x", 1)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(get(&mut w, &f, 20).await.unwrap().0, 15);

    // The job's next attempt (same job, new lease) resumes from them.
    w.release_job(pb::ReleaseJobRequest { fence: Some(f.clone()) }).await.unwrap();
    let next = fence(&lease(&mut w, "w").await.unwrap());
    assert_eq!(next.job_id, f.job_id);
    assert_eq!(get(&mut w, &next, 20).await.unwrap().0, 15);
    server.stop().await;
}

#[tokio::test]
async fn damaged_or_oversized_uploads_are_refused_and_keep_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), config(dir.path())).await;
    let mut sweeps = server.sweeps().await;
    submit(&mut sweeps, spec("bad", &["natural_softmax"], &[0], 20)).await.unwrap();
    let mut w = server.workers().await;
    register(&mut w, "w").await;
    let f = fence(&lease(&mut w, "w").await.unwrap());
    let bytes = vec![7u8; 1000];
    let flipped = {
        let mut b = bytes.clone();
        b[500] ^= 1;
        b
    };
    let data = |b: &[u8]| pb::CheckpointChunk { part: Some(Part::Data(b.to_vec())) };
    let cases: Vec<(Code, &str, Vec<pb::CheckpointChunk>)> = vec![
        (Code::DataLoss, "SHA-256", upload(header(&f, 5, &bytes), &flipped, 300)),
        (Code::InvalidArgument, "header announced", upload(header(&f, 5, &bytes), &bytes[..999], 300)),
        (Code::InvalidArgument, "more than", {
            let mut m = upload(header(&f, 5, &bytes), &bytes, 300);
            m.push(data(b"extra"));
            m
        }),
        (Code::InvalidArgument, "header", vec![data(&bytes)]),
        (Code::InvalidArgument, "epoch", upload(header(&f, 21, &bytes), &bytes, 300)),
        (
            Code::InvalidArgument,
            "sha256",
            upload(pb::CheckpointHeader { sha256: "ABC".into(), ..header(&f, 5, &bytes) }, &bytes, 300),
        ),
        (
            Code::ResourceExhausted,
            "limit",
            upload(pb::CheckpointHeader { size: 9 << 20, ..header(&f, 5, &bytes) }, &bytes, 300),
        ),
    ];
    for (code, needle, messages) in cases {
        let err = put(&mut w, messages).await.unwrap_err();
        assert_eq!(err.code(), code, "{needle}: {err:?}");
        assert!(err.message().contains(needle), "{needle:?} not in {:?}", err.message());
    }
    assert_eq!(get(&mut w, &f, 20).await.unwrap_err().code(), Code::NotFound, "nothing was kept");
    assert_eq!(std::fs::read_dir(dir.path().join("ckpt")).map(|d| d.count()).unwrap_or(0), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_finished_job_loses_its_checkpoints_and_a_coordinator_without_a_store_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), config(dir.path())).await;
    let mut sweeps = server.sweeps().await;
    submit(&mut sweeps, spec("done", &["natural_softmax"], &[0], 2)).await.unwrap();
    let mut w = server.workers().await;
    register(&mut w, "w").await;
    let f = fence(&lease(&mut w, "w").await.unwrap());
    put(&mut w, upload(header(&f, 1, b"state"), b"state", 2)).await.unwrap();
    let job_dir = dir.path().join("ckpt").join(format!("job-{}", f.job_id));
    assert!(job_dir.join("epoch-00001.ckpt").is_file());
    let (_, err) = report(&mut w, vec![epoch_report(&f, 1, 0.4), epoch_report(&f, 2, 0.5)]).await;
    assert!(err.is_none());
    w.complete_job(pb::CompleteJobRequest { fence: Some(f.clone()) }).await.unwrap();
    assert!(!job_dir.exists(), "a succeeded job is never resumed");
    server.stop().await;

    let plain = tempfile::tempdir().unwrap();
    let server = TestServer::start(plain.path(), coordinator::Config::default()).await;
    let mut sweeps = server.sweeps().await;
    submit(&mut sweeps, spec("none", &["natural_softmax"], &[0], 2)).await.unwrap();
    let mut w = server.workers().await;
    register(&mut w, "w").await;
    let f = fence(&lease(&mut w, "w").await.unwrap());
    let err = put(&mut w, upload(header(&f, 1, b"state"), b"state", 2)).await.unwrap_err();
    assert!(
        err.code() == Code::FailedPrecondition && err.message().contains("--checkpoint-store"),
        "{err:?}"
    );
    server.stop().await;
}
