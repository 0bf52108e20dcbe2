//! Worker protocol edges: an epoch stream holding a message that cannot be decoded, request
//! messages over the size limit, and what a write under a stale fence is told.

use prost::Message;
use prost::bytes::BufMut;
use sweep_proto::pb;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

use crate::common::*;

/// Sends each item as one gRPC message, its bytes as they are (tonic adds the 5-byte frame
/// header), so a stream can carry bytes that are no `EpochReport`; answers decode as acks.
#[derive(Debug, Default)]
struct RawReports;

#[derive(Debug)]
struct RawEncoder;

#[derive(Debug)]
struct AckDecoder;

impl Codec for RawReports {
    type Encode = Vec<u8>;
    type Decode = pb::EpochAck;
    type Encoder = RawEncoder;
    type Decoder = AckDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> AckDecoder {
        AckDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for AckDecoder {
    type Item = pb::EpochAck;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<pb::EpochAck>, tonic::Status> {
        pb::EpochAck::decode(src).map(Some).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

/// Streams `frames` to `ReportEpochs` as raw messages and collects the acks and the final status
/// (`Ok` when the stream ended without one).
async fn report_raw(server: &TestServer, frames: Vec<Vec<u8>>) -> (Vec<pb::EpochAck>, tonic::Status) {
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let path = PathAndQuery::from_static("/sweep.v1.WorkerService/ReportEpochs");
    let request = tonic::Request::new(tokio_stream::iter(frames));
    let mut stream = match grpc.streaming(request, path, RawReports).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (Vec::new(), status),
    };
    let mut acks = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(ack)) => acks.push(ack),
            Ok(None) => return (acks, tonic::Status::ok("")),
            Err(status) => return (acks, status),
        }
    }
}

#[tokio::test]
async fn an_undecodable_report_ends_the_stream_with_invalid_argument_after_acking_the_ones_before() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), coordinator::Config::default()).await;
    let mut sweeps = server.sweeps().await;
    let mut workers = server.workers().await;
    submit(&mut sweeps, spec("garbled", &["natural_softmax"], &[0], 3)).await.unwrap();
    register(&mut workers, "w").await;
    let f = fence(&lease(&mut workers, "w").await.unwrap());

    let frames = vec![
        epoch_report(&f, 1, 0.4).encode_to_vec(),
        epoch_report(&f, 2, 0.5).encode_to_vec(),
        // Field 1 (fence), length-delimited, claiming 383 bytes that never come.
        vec![0x0a, 0xff, 0x02],
    ];
    let (acks, status) = report_raw(&server, frames).await;
    let acked: Vec<(i64, u32, bool)> = acks.iter().map(|a| (a.job_id, a.epoch, a.duplicate)).collect();
    assert_eq!(acked, vec![(f.job_id, 1, false), (f.job_id, 2, false)]);
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("malformed message"), "{:?}", status.message());
    assert!(status.message().contains("decode"), "{:?}", status.message());

    let detail = job(&mut sweeps, f.job_id).await;
    let stored: Vec<u32> = detail.epochs.iter().map(|e| e.epoch).collect();
    assert_eq!(stored, vec![1, 2]);
    assert_eq!(detail.job.unwrap().epochs_done, 2);
    server.stop().await;
}

#[tokio::test]
async fn oversized_request_messages_get_out_of_range_unary_and_streamed() {
    const LIMIT: usize = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let config = coordinator::Config { max_message_bytes: LIMIT, ..coordinator::Config::default() };
    let server = TestServer::start(dir.path(), config).await;
    let mut sweeps = server.sweeps().await;
    let mut workers = server.workers().await;

    let huge = pb::RegisterWorkerRequest {
        worker_id: "big".into(),
        hostname: "h".repeat(2 * LIMIT),
        slots: 1,
        ..Default::default()
    };
    let err = workers.register_worker(huge).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("too large"), "{:?}", err.message());
    assert!(sweeps.list_workers(pb::ListWorkersRequest {}).await.unwrap().into_inner().workers.is_empty());

    submit(&mut sweeps, spec("oversized", &["natural_softmax"], &[0], 2)).await.unwrap();
    register(&mut workers, "w").await;
    let f = fence(&lease(&mut workers, "w").await.unwrap());
    let mut big = epoch_report(&f, 2, 0.5);
    big.fence.as_mut().unwrap().lease_token = "t".repeat(2 * LIMIT);
    let (acks, err) = report(&mut workers, vec![epoch_report(&f, 1, 0.4), big]).await;
    assert_eq!(acks.iter().map(|a| a.epoch).collect::<Vec<_>>(), vec![1]);
    let err = err.expect("the stream ends with an error");
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("too large"), "{:?}", err.message());
    let detail = job(&mut sweeps, f.job_id).await;
    assert_eq!(detail.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(), vec![1]);
    server.stop().await;
}

/// The status of one epoch report under `f`, which must be refused.
async fn refused(workers: &mut Workers, f: &pb::Fence) -> tonic::Status {
    let (acks, err) = report(workers, vec![epoch_report(f, 1, 0.5)]).await;
    assert!(acks.is_empty(), "{acks:?}");
    let err = err.expect("refused");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    err
}

#[tokio::test]
async fn stale_fences_are_told_whether_the_attempt_or_the_token_differs() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), coordinator::Config::default()).await;
    let mut sweeps = server.sweeps().await;
    let mut workers = server.workers().await;
    submit(&mut sweeps, spec("fences", &["natural_softmax"], &[0], 2)).await.unwrap();
    register(&mut workers, "w").await;
    let f = fence(&lease(&mut workers, "w").await.unwrap());
    let (id, attempt) = (f.job_id, f.attempt);
    let token_differs = |attempt: u32| {
        format!("job {id} attempt {attempt}: the lease token does not match the current lease")
    };

    let forged = pb::Fence { lease_token: "forged-token".into(), ..f.clone() };
    let err = refused(&mut workers, &forged).await;
    assert!(err.message().ends_with(&token_differs(attempt)), "{:?}", err.message());
    assert!(!err.message().contains("forged-token") && !err.message().contains(&f.lease_token));
    // A unary write says the same.
    let err = workers.complete_job(pb::CompleteJobRequest { fence: Some(forged) }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().ends_with(&token_differs(attempt)), "{:?}", err.message());

    let ahead = pb::Fence { attempt: attempt + 1, ..f.clone() };
    let err = refused(&mut workers, &ahead).await;
    let attempt_differs = |on: u32, fenced: u32| {
        format!("job {id} is on attempt {on} and the fence (attempt {fenced}) is not its current lease")
    };
    assert!(err.message().ends_with(&attempt_differs(attempt, attempt + 1)), "{:?}", err.message());
    assert!(!err.message().contains(&f.lease_token));

    // A handed-back job is on a new attempt: the old fence is behind it, and a token made up for
    // the new attempt is refused as a token before the job is leased again and after.
    workers.release_job(pb::ReleaseJobRequest { fence: Some(f.clone()) }).await.unwrap();
    let err = refused(&mut workers, &f).await;
    assert!(err.message().ends_with(&attempt_differs(attempt + 1, attempt)), "{:?}", err.message());
    let err = refused(&mut workers, &ahead).await;
    let not_leased = format!("job {id} attempt {}: the job is not leased", attempt + 1);
    assert!(err.message().ends_with(&not_leased), "{:?}", err.message());
    let again = fence(&lease(&mut workers, "w").await.unwrap());
    assert_eq!((again.job_id, again.attempt), (id, attempt + 1));
    let err = refused(&mut workers, &ahead).await;
    assert!(err.message().ends_with(&token_differs(attempt + 1)), "{:?}", err.message());
    assert!(!err.message().contains(&again.lease_token));
    assert!(job(&mut sweeps, id).await.epochs.is_empty());
    server.stop().await;
}
