use std::time::Duration;

use crate::{Result, StorageError};

/// S3's minimum size of every part of a multipart upload except the last, in bytes.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// Retry and deadline settings of storage requests.
///
/// Stores opened from cloud URLs hand these to object_store's HTTP client,
/// which retries 5xx and 429 responses and transport errors.
/// [`crate::RetryBackend`] applies the same settings to any other backend.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Maximum number of retries of one request after its first attempt.
    pub max_retries: usize,
    /// Backoff before the first retry.
    pub initial_backoff: Duration,
    /// Maximum backoff between two attempts.
    pub max_backoff: Duration,
    /// Factor by which the backoff grows after each retry.
    pub backoff_base: f64,
    /// Maximum time from the first attempt after which no retry starts.
    pub retry_timeout: Duration,
    /// Deadline of one attempt, or `None` for no deadline.
    pub request_timeout: Option<Duration>,
    /// Deadline for opening a connection, for HTTP stores.
    pub connect_timeout: Option<Duration>,
}

impl Default for RetryConfig {
    /// Returns object_store 0.12's defaults: 10 retries, backoff from 100 ms
    /// doubling up to 15 s, no retry after 3 minutes, 30 s per request and
    /// 5 s to connect.
    fn default() -> RetryConfig {
        RetryConfig {
            max_retries: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            backoff_base: 2.0,
            retry_timeout: Duration::from_secs(180),
            request_timeout: Some(Duration::from_secs(30)),
            connect_timeout: Some(Duration::from_secs(5)),
        }
    }
}

impl RetryConfig {
    /// Sets the maximum number of retries of one request.
    pub fn with_max_retries(mut self, max_retries: usize) -> RetryConfig {
        self.max_retries = max_retries;
        self
    }

    /// Sets the backoff before the first retry and the maximum backoff.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> RetryConfig {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// Sets the time after the first attempt past which no retry starts.
    pub fn with_retry_timeout(mut self, retry_timeout: Duration) -> RetryConfig {
        self.retry_timeout = retry_timeout;
        self
    }

    /// Sets the deadline of one attempt; `None` lets an attempt run forever.
    pub fn with_request_timeout(mut self, request_timeout: Option<Duration>) -> RetryConfig {
        self.request_timeout = request_timeout;
        self
    }

    /// Returns the backoff before retry number `retry` (counted from 1), without jitter.
    pub(crate) fn backoff(&self, retry: usize) -> Duration {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let factor = self.backoff_base.max(1.0).powi(exponent);
        let seconds = self.initial_backoff.as_secs_f64() * factor;
        let max = self.max_backoff.as_secs_f64();
        Duration::from_secs_f64(if seconds.is_finite() {
            seconds.min(max)
        } else {
            max
        })
    }

    pub(crate) fn to_object_store(&self) -> object_store::RetryConfig {
        object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: self.initial_backoff,
                max_backoff: self.max_backoff,
                base: self.backoff_base,
            },
            max_retries: self.max_retries,
            retry_timeout: self.retry_timeout,
        }
    }
}

/// When and how [`crate::ObjectStoreBackend`] splits a write into a multipart upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultipartConfig {
    threshold: usize,
    part_size: usize,
    max_concurrency: usize,
}

impl Default for MultipartConfig {
    /// Returns a 64 MiB threshold, 16 MiB parts and 4 parts in flight.
    fn default() -> MultipartConfig {
        // NOTE: these sizes are a starting point, not a tuned choice: S3
        // needs parts of at least 5 MiB, and larger parts mean fewer requests.
        MultipartConfig {
            threshold: 64 * 1024 * 1024,
            part_size: 16 * 1024 * 1024,
            max_concurrency: 4,
        }
    }
}

impl MultipartConfig {
    /// Creates a configuration that uploads objects of `threshold` bytes or
    /// more in parts of `part_size` bytes, with at most `max_concurrency` in flight.
    ///
    /// Fails with [`StorageError::InvalidOption`] when `part_size` is below
    /// [`MIN_PART_SIZE`], `threshold` is below `part_size`, or
    /// `max_concurrency` is zero.
    pub fn new(
        threshold: usize,
        part_size: usize,
        max_concurrency: usize,
    ) -> Result<MultipartConfig> {
        let invalid = |option: &str, reason: String| StorageError::InvalidOption {
            option: option.to_owned(),
            reason,
        };
        if part_size < MIN_PART_SIZE {
            return Err(invalid(
                "multipart part size",
                format!("{part_size} bytes is below S3's minimum of {MIN_PART_SIZE} bytes"),
            ));
        }
        if threshold < part_size {
            return Err(invalid(
                "multipart threshold",
                format!("{threshold} bytes is below the part size of {part_size} bytes"),
            ));
        }
        if max_concurrency == 0 {
            return Err(invalid(
                "multipart concurrency",
                "0 parts in flight: set at least 1".to_owned(),
            ));
        }
        Ok(MultipartConfig {
            threshold,
            part_size,
            max_concurrency,
        })
    }

    /// Size in bytes from which a write is a multipart upload.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Size in bytes of every part except the last, which may be smaller.
    pub fn part_size(&self) -> usize {
        self.part_size
    }

    /// Maximum number of parts uploading at the same time.
    pub fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }
}

/// The split of a large byte range that [`crate::ObjectStoreBackend`]
/// reads into parts, fetched by concurrent range requests.
///
/// The limit bounds the requests in flight for one read, not the memory:
/// a read returns the whole range in one buffer either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeReadConfig {
    part_size: usize,
    max_concurrency: usize,
}

impl Default for RangeReadConfig {
    /// Returns 8 MiB parts with at most 8 requests in flight per read.
    fn default() -> RangeReadConfig {
        // NOTE: a starting point, not a tuned choice. Parts of a few MiB
        // keep each request's latency small against its transfer time.
        RangeReadConfig {
            part_size: 8 * 1024 * 1024,
            max_concurrency: 8,
        }
    }
}

impl RangeReadConfig {
    /// Creates a configuration that splits reads longer than `part_size`
    /// bytes into parts, with at most `max_concurrency` requests in flight.
    ///
    /// Fails with [`StorageError::InvalidOption`] when either is zero.
    pub fn new(part_size: usize, max_concurrency: usize) -> Result<RangeReadConfig> {
        if part_size == 0 {
            return Err(StorageError::InvalidOption {
                option: "range read part size".to_owned(),
                reason: "0 bytes: set at least 1".to_owned(),
            });
        }
        if max_concurrency == 0 {
            return Err(StorageError::InvalidOption {
                option: "range read concurrency".to_owned(),
                reason: "0 requests in flight: set at least 1".to_owned(),
            });
        }
        Ok(RangeReadConfig {
            part_size,
            max_concurrency,
        })
    }

    /// Size in bytes of every part except the last, which may be smaller.
    pub fn part_size(&self) -> usize {
        self.part_size
    }

    /// Maximum number of range requests in flight for one read.
    pub fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }
}

/// Options for opening a store by URL with [`crate::open_store_with`].
///
/// `config` entries are object_store configuration keys and values, such
/// as `endpoint`, `region`, `allow_http`, `access_key_id`,
/// `virtual_hosted_style_request` or `aws_conditional_put`. They override
/// the same keys given as query parameters of the URL, which override the
/// environment (`AWS_*`, `GOOGLE_*`, `AZURE_*` variables, read as
/// object_store's `from_env` builders read them).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct StoreOptions {
    /// object_store configuration keys and values, applied in order.
    pub config: Vec<(String, String)>,
    /// Retries and deadlines of requests.
    pub retry: RetryConfig,
    /// Multipart uploads of large objects.
    pub multipart: MultipartConfig,
    /// Concurrent range requests of large reads.
    pub range_reads: RangeReadConfig,
}

impl StoreOptions {
    /// Adds an object_store configuration key and value.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> StoreOptions {
        self.config.push((key.into(), value.into()));
        self
    }

    /// Sets the retries and deadlines of requests.
    pub fn with_retry(mut self, retry: RetryConfig) -> StoreOptions {
        self.retry = retry;
        self
    }

    /// Sets when and how large objects are uploaded in parts.
    pub fn with_multipart(mut self, multipart: MultipartConfig) -> StoreOptions {
        self.multipart = multipart;
        self
    }

    /// Sets how large reads are split into concurrent range requests.
    pub fn with_range_reads(mut self, range_reads: RangeReadConfig) -> StoreOptions {
        self.range_reads = range_reads;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_max() {
        let retry = RetryConfig::default()
            .with_backoff(Duration::from_millis(100), Duration::from_millis(350));
        assert_eq!(retry.backoff(1), Duration::from_millis(100));
        assert_eq!(retry.backoff(2), Duration::from_millis(200));
        assert_eq!(retry.backoff(3), Duration::from_millis(350));
        assert_eq!(retry.backoff(usize::MAX), Duration::from_millis(350));
    }

    #[test]
    fn multipart_part_below_minimum() {
        let err = MultipartConfig::new(MIN_PART_SIZE, MIN_PART_SIZE - 1, 1).unwrap_err();
        assert!(matches!(err, StorageError::InvalidOption { .. }), "{err}");
    }

    #[test]
    fn multipart_threshold_below_part() {
        let err = MultipartConfig::new(MIN_PART_SIZE, MIN_PART_SIZE + 1, 1).unwrap_err();
        assert!(matches!(err, StorageError::InvalidOption { .. }), "{err}");
    }

    #[test]
    fn range_reads_reject_zero() {
        assert!(RangeReadConfig::new(0, 1).is_err());
        assert!(RangeReadConfig::new(1, 0).is_err());
    }

    #[test]
    fn multipart_zero_concurrency() {
        let err = MultipartConfig::new(MIN_PART_SIZE, MIN_PART_SIZE, 0).unwrap_err();
        assert!(matches!(err, StorageError::InvalidOption { .. }), "{err}");
    }
}
