//! Errors of the balance crate: invalid backend specs, health thresholds, cookie values and
//! class lists.
//!
//! Owns the single `BalanceError` enum. It does not log or count anything: the caller (config
//! validation, the proxy) decides what an error means for the operator.

use thiserror::Error;

/// Everything that can go wrong while building a backend snapshot or decoding persistence data.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BalanceError {
    /// A server weight is above [`crate::MAX_WEIGHT`].
    #[error("invalid weight {weight} for server {server} in backend {backend}: must be 0..=256")]
    InvalidWeight {
        /// Backend the server belongs to.
        backend: String,
        /// Server name.
        server: String,
        /// The rejected weight.
        weight: u32,
    },
    /// A server name is empty.
    #[error("empty server name in backend {backend}")]
    EmptyServerName {
        /// Backend the server belongs to.
        backend: String,
    },
    /// Two servers in one backend share a name.
    #[error("duplicate server name {server} in backend {backend}")]
    DuplicateServerName {
        /// Backend the servers belong to.
        backend: String,
        /// The repeated name.
        server: String,
    },
    /// Two servers in one backend share an id (explicit ids or a hash collision).
    #[error("duplicate server id {id} for servers {first} and {second} in backend {backend}")]
    DuplicateServerId {
        /// Backend the servers belong to.
        backend: String,
        /// The shared id, as its cookie encoding.
        id: String,
        /// First server carrying the id.
        first: String,
        /// Second server carrying the id.
        second: String,
    },
    /// The `header` algorithm was configured with an empty header name.
    #[error("empty header name for balance header in backend {backend}")]
    EmptyHeaderName {
        /// Backend with the bad algorithm.
        backend: String,
    },
    /// A cookie value is not a valid encoded server id.
    #[error("invalid persistence cookie value {value:?}: expected 16 hex digits")]
    InvalidCookie {
        /// The rejected value (truncated to 64 bytes).
        value: String,
    },
    /// A health threshold (`rise` or `fall`) is zero.
    #[error("invalid health threshold {name}=0: must be at least 1")]
    ZeroThreshold {
        /// `"rise"` or `"fall"`.
        name: &'static str,
    },
    /// A stick table was created with a capacity of zero.
    #[error("invalid stick table capacity 0: must be at least 1")]
    ZeroCapacity,
    /// A class set was built from an empty list.
    #[error("invalid class list: at least one class is needed")]
    NoClasses,
    /// A class set has more classes than a [`crate::ClassId`] can number.
    #[error("invalid class list: {count} classes, at most 65535")]
    TooManyClasses {
        /// Number of classes given.
        count: usize,
    },
    /// A class name is empty.
    #[error("empty class name")]
    EmptyClassName,
    /// Two classes share a name.
    #[error("duplicate class name {class}")]
    DuplicateClassName {
        /// The repeated name.
        class: String,
    },
    /// Two classes share a priority, so neither would be served first.
    #[error("classes {first} and {second} have the same priority {priority}")]
    DuplicateClassPriority {
        /// The shared priority.
        priority: i32,
        /// First class with it.
        first: String,
        /// Second class with it.
        second: String,
    },
    /// A share above 100%, or shares adding up to more than 100% of a backend's capacity.
    #[error("invalid class shares: they add up to {total}%, at most 100%")]
    SharesOver100 {
        /// Sum of the shares up to and including the first one that went over.
        total: u32,
    },
    /// A classifier source rule whose prefix is longer than its address.
    #[error("invalid source network {network}/{prefix}: prefix longer than the address")]
    InvalidSourcePrefix {
        /// The network address.
        network: String,
        /// The rejected prefix length.
        prefix: u8,
    },
    /// A queue time limit of zero would expire every waiting request at once.
    #[error("invalid {what}: must be greater than zero")]
    ZeroQueueTime {
        /// Which limit (`max_queue_time of class gold`, `queue timeout`).
        what: String,
    },
}
