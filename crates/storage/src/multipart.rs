//! Multipart uploads of large objects with a bounded number of parts in
//! flight, aborted on any failure so that no upload stays open.

use std::{future::Future, time::Duration};

use bytes::Bytes;
use futures::{stream::FuturesUnordered, StreamExt};
use object_store::{path::Path as ObjectPath, MultipartUpload, ObjectStore, PutPayload};

use crate::MultipartConfig;

/// Failure of a multipart upload.
#[derive(Debug)]
pub(crate) enum UploadError {
    /// The store returned an error.
    Store(object_store::Error),
    /// One request did not finish within the deadline.
    TimedOut(Duration),
}

impl From<object_store::Error> for UploadError {
    fn from(error: object_store::Error) -> UploadError {
        UploadError::Store(error)
    }
}

/// Runs `future` with `deadline` as its time limit, when there is one.
pub(crate) async fn with_deadline<T>(
    deadline: Option<Duration>,
    future: impl Future<Output = Result<T, object_store::Error>>,
) -> Result<T, UploadError> {
    match deadline {
        None => Ok(future.await?),
        Some(limit) => match tokio::time::timeout(limit, future).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(UploadError::TimedOut(limit)),
        },
    }
}

/// Uploads `value` to `path` in parts of `config.part_size()` bytes.
///
/// Each request (start, every part, completion) has `deadline` as its time
/// limit. When any of them fails, the upload is aborted before the error
/// returns, so that S3 keeps no parts of it. An abort that itself fails is
/// logged and the first error returned.
pub(crate) async fn put_multipart(
    store: &dyn ObjectStore,
    path: &ObjectPath,
    value: Bytes,
    config: &MultipartConfig,
    deadline: Option<Duration>,
) -> Result<(), UploadError> {
    let mut upload = with_deadline(deadline, store.put_multipart(path)).await?;

    let uploaded = match upload_parts(upload.as_mut(), value, config, deadline).await {
        Ok(()) => with_deadline(deadline, upload.complete()).await.map(drop),
        Err(error) => Err(error),
    };
    let Err(error) = uploaded else {
        return Ok(());
    };

    tracing::debug!(path = %path, error = ?error, "aborting a failed multipart upload");
    if let Err(abort_error) = with_deadline(deadline, upload.abort()).await {
        // NOTE: after a failed abort the uploaded parts stay stored, and
        // billed, until a later abort or a bucket lifecycle rule removes them.
        tracing::warn!(path = %path, error = ?abort_error, "failed to abort a multipart upload");
    }
    Err(error)
}

/// Starts every part of `value`, keeping at most `config.max_concurrency()` in flight.
async fn upload_parts(
    upload: &mut dyn MultipartUpload,
    value: Bytes,
    config: &MultipartConfig,
    deadline: Option<Duration>,
) -> Result<(), UploadError> {
    let mut in_flight = FuturesUnordered::new();
    let mut offset = 0;
    while offset < value.len() {
        while in_flight.len() >= config.max_concurrency() {
            if let Some(result) = in_flight.next().await {
                result?;
            }
        }
        let end = value.len().min(offset + config.part_size());
        let part = upload.put_part(PutPayload::from(value.slice(offset..end)));
        in_flight.push(with_deadline(deadline, part));
        offset = end;
    }
    while let Some(result) = in_flight.next().await {
        result?;
    }
    Ok(())
}
