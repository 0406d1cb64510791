//! gRPC messages as raw bytes: a `tonic` codec that neither encodes nor
//! decodes.
//!
//! The clients use it: the forwarder sends exports on as they came, and
//! the load generator sends batches encoded once (the receiver reads its
//! unary calls itself, [`crate::receive::grpc`]). tonic's framing,
//! compression and size limits still apply; this codec never looks inside
//! a message and must never copy one.

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Sends and receives messages as the `Bytes` of their frames.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;
    fn encoder(&mut self) -> Self::Encoder {
        BytesCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        // DecodeBuf over tonic's BytesMut: split off, not copied.
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
