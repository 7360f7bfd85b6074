//! The gRPC codec: requests are decoded with prost; responses are written straight from
//! each resource's cached bytes, so a response to 10,000 proxies costs 10,000 buffer
//! copies and no re-encoding.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::BufMut;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::resource::{Resource, ResourceType};

/// Identifies this control plane in every response (`control_plane.identifier`).
pub(crate) const CONTROL_PLANE_ID: &str = concat!("meshplane/", env!("CARGO_PKG_VERSION"));

/// A state-of-the-world `DiscoveryResponse`.
#[derive(Debug, Clone)]
pub struct SotwResponse {
    /// `version_info`.
    pub version: String,
    /// Resource type.
    pub kind: ResourceType,
    /// `nonce`.
    pub nonce: String,
    /// The resources, in name order.
    pub resources: Vec<Arc<Resource>>,
}

/// An incremental `DeltaDiscoveryResponse`.
#[derive(Debug, Clone)]
pub struct DeltaResponse {
    /// `system_version_info`.
    pub system_version: String,
    /// Resource type.
    pub kind: ResourceType,
    /// `nonce`.
    pub nonce: String,
    /// Added or changed resources.
    pub resources: Vec<Arc<Resource>>,
    /// `removed_resources`.
    pub removed: Vec<String>,
}

/// A message the codec can write.
pub trait WireMessage: Send + 'static {
    /// Writes the protobuf encoding of the message.
    fn write(&self, buf: &mut impl BufMut);
}

fn put_string(tag: u32, value: &str, buf: &mut impl BufMut) {
    if !value.is_empty() {
        put_bytes_field(tag, value.as_bytes(), buf);
    }
}

fn put_bytes_field(tag: u32, value: &[u8], buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(value.len() as u64, buf);
    buf.put_slice(value);
}

fn string_field_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        prost::encoding::key_len(tag) + encoded_len_varint(value.len() as u64) + value.len()
    }
}

/// `ControlPlane { identifier }`, encoded.
fn control_plane_bytes() -> Vec<u8> {
    let mut out = Vec::with_capacity(CONTROL_PLANE_ID.len() + 2);
    put_string(1, CONTROL_PLANE_ID, &mut out);
    out
}

/// A response made of small fields around the resources' shared, pre-encoded bodies. The
/// stream body writes it part by part (see `server::body`), so no per-stream buffer ever
/// holds a whole response.
pub trait PartedMessage: Send + 'static {
    /// Fields before the resources.
    fn head(&self, out: &mut Vec<u8>);
    /// Number of resources.
    fn count(&self) -> usize;
    /// Bytes before resource `i`'s shared body.
    fn prefix(&self, i: usize, out: &mut Vec<u8>);
    /// Resource `i`'s shared, pre-encoded body.
    fn body(&self, i: usize) -> &bytes::Bytes;
    /// Bytes after resource `i`'s body.
    fn suffix(&self, i: usize, out: &mut Vec<u8>);
    /// Fields after the resources.
    fn tail(&self, out: &mut Vec<u8>);

    /// Length of the whole encoded message.
    fn encoded_len(&self) -> usize {
        let mut scratch = Vec::new();
        self.head(&mut scratch);
        let mut len = scratch.len();
        for i in 0..self.count() {
            scratch.clear();
            self.prefix(i, &mut scratch);
            self.suffix(i, &mut scratch);
            len += scratch.len() + self.body(i).len();
        }
        scratch.clear();
        self.tail(&mut scratch);
        len + scratch.len()
    }
}

fn write_parts(m: &impl PartedMessage, buf: &mut impl BufMut) {
    let mut scratch = Vec::new();
    m.head(&mut scratch);
    for i in 0..m.count() {
        m.prefix(i, &mut scratch);
        scratch.extend_from_slice(m.body(i));
        m.suffix(i, &mut scratch);
    }
    m.tail(&mut scratch);
    buf.put_slice(&scratch);
}

impl PartedMessage for SotwResponse {
    // DiscoveryResponse: version_info=1, resources=2, type_url=4, nonce=5, control_plane=6.
    fn head(&self, out: &mut Vec<u8>) {
        put_string(1, &self.version, out);
    }
    fn count(&self) -> usize {
        self.resources.len()
    }
    fn prefix(&self, i: usize, out: &mut Vec<u8>) {
        encode_key(2, WireType::LengthDelimited, out);
        encode_varint(self.resources[i].encoded_any().len() as u64, out);
    }
    fn body(&self, i: usize) -> &bytes::Bytes {
        self.resources[i].encoded_any()
    }
    fn suffix(&self, _: usize, _: &mut Vec<u8>) {}
    fn tail(&self, out: &mut Vec<u8>) {
        put_string(4, self.kind.type_url(), out);
        put_string(5, &self.nonce, out);
        put_bytes_field(6, &control_plane_bytes(), out);
    }
}

impl PartedMessage for DeltaResponse {
    // DeltaDiscoveryResponse: system_version_info=1, resources=2, type_url=4, nonce=5,
    // removed_resources=6, control_plane=7. Resource: version=1, resource=2 (Any), name=3.
    fn head(&self, out: &mut Vec<u8>) {
        put_string(1, &self.system_version, out);
    }
    fn count(&self) -> usize {
        self.resources.len()
    }
    fn prefix(&self, i: usize, out: &mut Vec<u8>) {
        let r = &self.resources[i];
        let any = r.encoded_any();
        let any_len =
            prost::encoding::key_len(2) + encoded_len_varint(any.len() as u64) + any.len();
        let len = string_field_len(1, r.version()) + any_len + string_field_len(3, r.name());
        encode_key(2, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
        put_string(1, r.version(), out);
        encode_key(2, WireType::LengthDelimited, out);
        encode_varint(any.len() as u64, out);
    }
    fn body(&self, i: usize) -> &bytes::Bytes {
        self.resources[i].encoded_any()
    }
    fn suffix(&self, i: usize, out: &mut Vec<u8>) {
        put_string(3, self.resources[i].name(), out);
    }
    fn tail(&self, out: &mut Vec<u8>) {
        put_string(4, self.kind.type_url(), out);
        put_string(5, &self.nonce, out);
        for name in &self.removed {
            put_bytes_field(6, name.as_bytes(), out);
        }
        put_bytes_field(7, &control_plane_bytes(), out);
    }
}

impl WireMessage for SotwResponse {
    fn write(&self, buf: &mut impl BufMut) {
        write_parts(self, buf);
    }
}

impl WireMessage for DeltaResponse {
    fn write(&self, buf: &mut impl BufMut) {
        write_parts(self, buf);
    }
}

/// A prost message wrapped for the codec (used by the `Fetch*` REST-style RPCs).
#[derive(Debug)]
pub struct Prost<M>(pub M);

impl<M: Message + Send + 'static> WireMessage for Prost<M> {
    fn write(&self, buf: &mut impl BufMut) {
        // Encoding into a growable buffer cannot fail.
        let _ = self.0.encode(buf);
    }
}

/// Codec: decodes `D` with prost, encodes any [`WireMessage`].
#[derive(Debug)]
pub struct XdsCodec<E, D>(PhantomData<fn() -> (E, D)>);

impl<E, D> Default for XdsCodec<E, D> {
    fn default() -> Self {
        XdsCodec(PhantomData)
    }
}

impl<E: WireMessage, D: Message + Default + Send + 'static> Codec for XdsCodec<E, D> {
    type Encode = E;
    type Decode = D;
    type Encoder = WireEncoder<E>;
    type Decoder = WireDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        WireEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder(PhantomData)
    }
}

/// Encoder half of [`XdsCodec`].
#[derive(Debug)]
pub struct WireEncoder<E>(PhantomData<fn() -> E>);

impl<E: WireMessage> Encoder for WireEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.write(dst);
        Ok(())
    }
}

/// Decoder half of [`XdsCodec`].
#[derive(Debug)]
pub struct WireDecoder<D>(PhantomData<fn() -> D>);

impl<D> Default for WireDecoder<D> {
    fn default() -> Self {
        WireDecoder(PhantomData)
    }
}

/// What a stream's request buffer starts at. tonic allocates 8 KiB per stream up front,
/// a third of what an ordinary stream costs in all; xDS requests are ACKs of ~200 bytes and,
/// once per stream, a request with the node of a KiB or two. The buffer grows to the largest
/// request a stream receives (a SotW wildcard proxy's endpoint requests name every cluster).
const REQUEST_BUFFER: usize = 1024;

impl<D: Message + Default> Decoder for WireDecoder<D> {
    type Item = D;
    type Error = Status;

    fn buffer_settings(&self) -> BufferSettings {
        // The yield threshold applies to encoding only; tonic's default.
        BufferSettings::new(REQUEST_BUFFER, 32 * 1024)
    }

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed xDS request: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse,
    };

    #[test]
    fn sotw_bytes_decode_as_discovery_response() {
        let r = Resource::empty_endpoints("payments");
        let msg = SotwResponse {
            version: "v1".into(),
            kind: ResourceType::Endpoint,
            nonce: "7".into(),
            resources: vec![r.clone()],
        };
        let mut buf = Vec::new();
        msg.write(&mut buf);
        let decoded = DiscoveryResponse::decode(buf.as_slice()).expect("valid protobuf");
        assert_eq!(decoded.version_info, "v1");
        assert_eq!(decoded.nonce, "7");
        assert_eq!(decoded.type_url, ResourceType::Endpoint.type_url());
        assert_eq!(decoded.resources, vec![r.to_any()]);
        assert_eq!(
            decoded.control_plane.expect("set").identifier,
            CONTROL_PLANE_ID
        );
    }

    /// The request buffer starts small; a request many times its size (a SotW endpoint
    /// request naming 2,000 clusters), split over several frames, still decodes.
    #[tokio::test]
    async fn requests_larger_than_the_initial_buffer_decode() {
        use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
        use http_body_util::StreamBody;
        let req = DiscoveryRequest {
            type_url: ResourceType::Endpoint.type_url().into(),
            resource_names: (0..2000).map(|i| format!("svc-{i:05}")).collect(),
            ..Default::default()
        };
        let encoded = req.encode_to_vec();
        assert!(encoded.len() > 10 * REQUEST_BUFFER);
        let mut framed = vec![0];
        framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        framed.extend_from_slice(&encoded);
        let frames: Vec<Result<http_body::Frame<bytes::Bytes>, Status>> = framed
            .chunks(3000)
            .map(|c| Ok(http_body::Frame::data(bytes::Bytes::copy_from_slice(c))))
            .collect();
        let body = StreamBody::new(futures::stream::iter(frames));
        let mut requests = tonic::Streaming::new_request(
            WireDecoder::<DiscoveryRequest>::default(),
            body,
            None,
            Some(1 << 20),
        );
        let decoded = requests.message().await.expect("decodes").expect("one");
        assert_eq!(decoded, req);
        assert!(requests.message().await.expect("clean end").is_none());
    }

    #[test]
    fn delta_bytes_decode_as_delta_response() {
        let r = Resource::empty_endpoints("payments");
        let msg = DeltaResponse {
            system_version: "s1".into(),
            kind: ResourceType::Endpoint,
            nonce: "3".into(),
            resources: vec![r.clone()],
            removed: vec!["gone".into()],
        };
        let mut buf = Vec::new();
        msg.write(&mut buf);
        let decoded = DeltaDiscoveryResponse::decode(buf.as_slice()).expect("valid protobuf");
        assert_eq!(decoded.system_version_info, "s1");
        assert_eq!(decoded.removed_resources, vec!["gone".to_owned()]);
        assert_eq!(decoded.resources.len(), 1);
        assert_eq!(decoded.resources[0].name, "payments");
        assert_eq!(decoded.resources[0].version, r.version());
        assert_eq!(decoded.resources[0].resource, Some(r.to_any()));
    }
}
