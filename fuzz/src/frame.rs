//! The frame readers of the node, without the async stream around them.

use weft_protocol::CodecError;
use weft_protocol::transfer::{FRAME_PREFIX, frame_len};

/// The payload of the frame at the start of `stream`, as the node's frame
/// readers (`/weft/rpc/1`, `/weft/auth/1` and the data plane) take it: a
/// `u32` big-endian length, checked against `limit` before anything else,
/// then exactly that many bytes. Bytes after the frame are left alone.
pub fn read(stream: &[u8], limit: usize) -> Result<&[u8], CodecError> {
    let prefix: [u8; FRAME_PREFIX] = stream
        .get(..FRAME_PREFIX)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| CodecError::Malformed("the stream ended inside a length prefix".into()))?;
    let len = frame_len(prefix, limit)?;
    stream
        .get(FRAME_PREFIX..FRAME_PREFIX + len)
        .ok_or_else(|| CodecError::Malformed(format!("frame truncated before {len} bytes")))
}

/// `payload` as a frame.
pub fn write(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_PREFIX + payload.len());
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(payload);
    out
}
