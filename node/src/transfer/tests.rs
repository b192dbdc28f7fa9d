//! Unit tests of the data plane below the fetch engine: the endpoint's
//! cluster-secret exchange, serving, the wire format of a response, and
//! verification into a partial blob.
