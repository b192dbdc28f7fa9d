//! Length-prefixed CBOR framing for the request/response protocols
//! (`/weft/auth/1`, `/weft/rpc/1`).
//!
//! Frame: a 4-byte big-endian length, then that many bytes of CBOR
//! (`weft_protocol::codec`). The length is checked against the protocol's
//! limit before anything is read or allocated, and the body is read as it
//! arrives rather than reserved up front, so a peer cannot make a node
//! allocate by claiming a large frame. A frame that is too large, truncated
//! or not valid CBOR, or that holds a field over its bound, fails the stream
//! with `InvalidData`; the connection and the node carry on.

use std::io;
use std::marker::PhantomData;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;
use serde::Serialize;
use serde::de::DeserializeOwned;
use weft_protocol::Bounded;

/// Bytes in a frame's length prefix.
const PREFIX_BYTES: usize = 4;

/// A request/response codec for `Req` and `Resp`, each frame at most `limit`
/// bytes of CBOR.
pub(crate) struct CborCodec<Req, Resp> {
    limit: usize,
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> CborCodec<Req, Resp> {
    pub(crate) fn new(limit: usize) -> Self {
        CborCodec {
            limit,
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> Clone for CborCodec<Req, Resp> {
    fn clone(&self) -> Self {
        CborCodec::new(self.limit)
    }
}

/// Reads one frame, refusing a declared length above `limit` before reading
/// the body.
pub(crate) async fn read_frame<T>(io: &mut T, limit: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut prefix = [0u8; PREFIX_BYTES];
    io.read_exact(&mut prefix).await?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {limit} bytes"),
        ));
    }
    let mut body = Vec::new();
    io.take(len as u64).read_to_end(&mut body).await?;
    if body.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("frame truncated at {} of {len} bytes", body.len()),
        ));
    }
    Ok(body)
}

/// Writes an encoded frame.
async fn write_frame<T>(io: &mut T, frame: Vec<u8>) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    io.write_all(&frame).await?;
    io.flush().await
}

/// The frame for `value`: length prefix and CBOR.
pub(crate) fn encode_frame<V: Serialize>(value: &V, limit: usize) -> io::Result<Vec<u8>> {
    let body = weft_protocol::codec::encode(value, limit)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "frame longer than 4 GiB"))?;
    let mut frame = Vec::with_capacity(PREFIX_BYTES + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Reads and decodes one frame from a peer: every field's bound is checked
/// (`weft_protocol::bounds`), so only bounded types can be read.
async fn read_value<T, V>(io: &mut T, limit: usize) -> io::Result<V>
where
    T: AsyncRead + Unpin + Send,
    V: DeserializeOwned + Bounded,
{
    let body = read_frame(io, limit).await?;
    weft_protocol::codec::decode_peer(&body, limit)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl<Req, Resp> request_response::Codec for CborCodec<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Bounded + Send + 'static,
    Resp: Serialize + DeserializeOwned + Bounded + Send + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_value(io, self.limit).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_value(io, self.limit).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, encode_frame(&req, self.limit)?).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, encode_frame(&res, self.limit)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;
    use weft_protocol::Request;
    use weft_protocol::codec::MAX_MESSAGE_BYTES;

    #[test]
    fn golden_frame() {
        let frame = encode_frame(&Request::Ping { nonce: 7 }, MAX_MESSAGE_BYTES).expect("encode");
        // length 14, then {"Ping": {"nonce": 7}}
        assert_eq!(hex::encode(frame), "0000000ea16450696e67a1656e6f6e636507");
    }

    #[tokio::test]
    async fn round_trip() {
        let frame = encode_frame(&Request::Ping { nonce: 9 }, 100).expect("encode");
        let mut codec = CborCodec::<Request, Request>::new(100);
        let proto = StreamProtocol::new("/t");
        let got =
            request_response::Codec::read_request(&mut codec, &proto, &mut Cursor::new(frame))
                .await
                .expect("read");
        assert_eq!(got, Request::Ping { nonce: 9 });
    }

    #[tokio::test]
    async fn oversized_prefix_is_refused_before_reading_the_body() {
        // claims 4 GiB - 1 and carries nothing: must fail on the prefix alone
        let mut io = Cursor::new(vec![0xff, 0xff, 0xff, 0xff]);
        let err = read_frame(&mut io, MAX_MESSAGE_BYTES)
            .await
            .expect_err("too large");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        // one byte over the limit is refused too
        let mut io = Cursor::new(((MAX_MESSAGE_BYTES + 1) as u32).to_be_bytes().to_vec());
        assert!(read_frame(&mut io, MAX_MESSAGE_BYTES).await.is_err());
    }

    #[tokio::test]
    async fn truncated_and_garbage_frames_fail() {
        let mut io = Cursor::new(vec![0, 0, 0, 10, 1, 2]);
        let err = read_frame(&mut io, 100).await.expect_err("truncated");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let mut io = Cursor::new(vec![0, 0]);
        assert!(read_frame(&mut io, 100).await.is_err());
        let mut codec = CborCodec::<Request, Request>::new(100);
        let proto = StreamProtocol::new("/t");
        let mut io = Cursor::new(vec![0, 0, 0, 3, 0xff, 0xfe, 0xfd]);
        let err = request_response::Codec::read_request(&mut codec, &proto, &mut io)
            .await
            .expect_err("garbage");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_field_over_its_bound_fails_the_read() {
        use weft_protocol::bounds::MAX_REPLICAS;
        let mut codec = CborCodec::<Request, Request>::new(MAX_MESSAGE_BYTES);
        let proto = StreamProtocol::new("/t");
        let over = Request::Replicate {
            hash: weft_protocol::Hash::EMPTY,
            replicas: MAX_REPLICAS + 1,
        };
        let frame = encode_frame(&over, MAX_MESSAGE_BYTES).expect("encode");
        let err =
            request_response::Codec::read_request(&mut codec, &proto, &mut Cursor::new(frame))
                .await
                .expect_err("over its bound");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("Replicate.replicas"), "{err}");
    }

    #[test]
    fn writing_an_oversized_value_fails() {
        let big = vec![0u8; 200];
        assert!(encode_frame(&big, 100).is_err());
    }
}
