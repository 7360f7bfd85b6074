//! The response body of an xDS stream.
//!
//! tonic's encoder keeps, per stream, a buffer as large as the largest message it ever sent:
//! with wildcard proxies (1,000 clusters) that is about 1 MiB per connected Envoy. This body
//! writes each response lazily in chunks of at most [`CHUNK`] bytes taken straight from the
//! resources' shared encodings, so a stream holds one chunk at a time and nothing after.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body::Frame;
use tokio::sync::mpsc;
use tonic::Status;

use crate::wire::PartedMessage;

/// Largest DATA chunk written at once.
pub(crate) const CHUNK: usize = 16 * 1024;

enum Stage {
    Head,
    Prefix(usize),
    Body(usize),
    Suffix(usize),
    Tail,
}

struct Cursor<M> {
    message: M,
    stage: Stage,
    /// The current small part (head, prefix, suffix, tail).
    small: Vec<u8>,
    offset: usize,
}

impl<M: PartedMessage> Cursor<M> {
    fn new(message: M) -> Self {
        // gRPC framing: uncompressed flag, then the message length (big-endian u32).
        let len = message.encoded_len();
        let mut small = Vec::with_capacity(64);
        small.push(0);
        small.extend_from_slice(&(len as u32).to_be_bytes());
        message.head(&mut small);
        Cursor {
            message,
            stage: Stage::Head,
            small,
            offset: 0,
        }
    }

    fn current(&self) -> &[u8] {
        match self.stage {
            Stage::Body(i) => self.message.body(i),
            _ => &self.small,
        }
    }

    /// Moves to the next part; false when the message is complete.
    fn advance(&mut self) -> bool {
        let n = self.message.count();
        let next = match self.stage {
            Stage::Head | Stage::Suffix(_) => {
                let i = match self.stage {
                    Stage::Suffix(i) => i + 1,
                    _ => 0,
                };
                if i < n { Stage::Prefix(i) } else { Stage::Tail }
            }
            Stage::Prefix(i) => Stage::Body(i),
            Stage::Body(i) => Stage::Suffix(i),
            Stage::Tail => return false,
        };
        self.small.clear();
        match next {
            Stage::Prefix(i) => self.message.prefix(i, &mut self.small),
            Stage::Suffix(i) => self.message.suffix(i, &mut self.small),
            Stage::Tail => self.message.tail(&mut self.small),
            Stage::Head | Stage::Body(_) => {}
        }
        self.stage = next;
        self.offset = 0;
        true
    }

    /// The next chunk, or `None` when the message has been written.
    fn next_chunk(&mut self) -> Option<Bytes> {
        let mut chunk = BytesMut::new();
        loop {
            let part = self.current();
            let rest = &part[self.offset.min(part.len())..];
            if rest.is_empty() {
                if !self.advance() {
                    break;
                }
                continue;
            }
            // A large body that starts a chunk goes out as a slice of the shared bytes.
            if chunk.is_empty()
                && rest.len() >= CHUNK
                && let Stage::Body(i) = self.stage
            {
                let end = (self.offset + CHUNK).min(part.len());
                let slice = self.message.body(i).slice(self.offset..end);
                self.offset = end;
                return Some(slice);
            }
            let take = rest.len().min(CHUNK - chunk.len());
            if chunk.capacity() == 0 {
                chunk.reserve(CHUNK.min(rest.len().max(256)));
            }
            chunk.put_slice(&rest[..take]);
            self.offset += take;
            if chunk.len() >= CHUNK {
                break;
            }
        }
        if chunk.is_empty() {
            None
        } else {
            Some(chunk.freeze())
        }
    }
}

/// The body: frames from the stream's response channel, then gRPC trailers.
pub(crate) struct ResponseBody<M> {
    rx: mpsc::Receiver<Result<M, Status>>,
    current: Option<Cursor<M>>,
    finished: bool,
}

impl<M: PartedMessage> ResponseBody<M> {
    pub(crate) fn new(rx: mpsc::Receiver<Result<M, Status>>) -> Self {
        ResponseBody {
            rx,
            current: None,
            finished: false,
        }
    }
}

fn trailers(status: &Status) -> HeaderMap {
    let mut map = HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        map.insert(
            Status::GRPC_STATUS,
            http::HeaderValue::from(status.code() as i32),
        );
    }
    map
}

impl<M: PartedMessage + Unpin> http_body::Body for ResponseBody<M> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        loop {
            if let Some(cursor) = &mut this.current {
                if let Some(chunk) = cursor.next_chunk() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                this.current = None;
            }
            if this.finished {
                return Poll::Ready(None);
            }
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(message))) => this.current = Some(Cursor::new(message)),
                Poll::Ready(Some(Err(status))) => {
                    this.finished = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))));
                }
                Poll::Ready(None) => {
                    this.finished = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers(&Status::ok(""))))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished && self.current.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{Resource, ResourceType};
    use crate::wire::{DeltaResponse, SotwResponse, WireMessage};
    use http_body_util::BodyExt;

    fn mk_response(n: usize, big: bool) -> SotwResponse {
        let resources = (0..n)
            .map(|i| {
                let endpoints: Vec<(String, u16, u32)> = (0..if big { 2000 } else { 2 })
                    .map(|j| {
                        (
                            format!("10.0.{}.{}", j / 250, j % 250),
                            8000 + (i as u16),
                            1,
                        )
                    })
                    .collect();
                let refs: Vec<(&str, u16, u32)> = endpoints
                    .iter()
                    .map(|(a, p, w)| (a.as_str(), *p, *w))
                    .collect();
                crate::fixtures::mk_endpoints(&format!("svc-{i}"), &refs)
            })
            .collect();
        SotwResponse {
            version: "v".into(),
            kind: ResourceType::Endpoint,
            nonce: "1".into(),
            resources,
        }
    }

    async fn collect<M: PartedMessage + WireMessage + Unpin + Clone>(
        messages: Vec<M>,
    ) -> (Vec<u8>, Vec<usize>, HeaderMap) {
        let (tx, rx) = mpsc::channel(8);
        for m in messages {
            tx.send(Ok(m)).await.expect("send");
        }
        drop(tx);
        let mut body = ResponseBody::new(rx);
        let mut data = Vec::new();
        let mut sizes = Vec::new();
        let mut trailers = HeaderMap::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("frame");
            match frame.into_data() {
                Ok(d) => {
                    sizes.push(d.len());
                    data.extend_from_slice(&d);
                }
                Err(f) => trailers = f.into_trailers().expect("trailers"),
            }
        }
        (data, sizes, trailers)
    }

    fn framed<M: WireMessage>(m: &M) -> Vec<u8> {
        let mut encoded = Vec::new();
        m.write(&mut encoded);
        let mut out = vec![0];
        out.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        out.extend_from_slice(&encoded);
        out
    }

    #[tokio::test]
    async fn chunks_reassemble_into_the_framed_messages_and_end_with_ok_trailers() {
        for (n, big) in [(0, false), (3, false), (400, false), (3, true)] {
            let m = mk_response(n, big);
            let (data, sizes, trailers) = collect(vec![m.clone(), m.clone()]).await;
            let mut expected = framed(&m);
            expected.extend(framed(&m));
            assert_eq!(data, expected, "n={n} big={big}");
            assert!(
                sizes.iter().all(|s| *s <= CHUNK),
                "no chunk above {CHUNK}: {sizes:?}"
            );
            assert_eq!(
                trailers.get("grpc-status").map(|v| v.as_bytes()),
                Some(&b"0"[..])
            );
        }
        let delta = DeltaResponse {
            system_version: "s".into(),
            kind: ResourceType::Endpoint,
            nonce: "2".into(),
            resources: vec![
                Resource::empty_endpoints("a"),
                Resource::empty_endpoints("b"),
            ],
            removed: vec!["gone".into()],
        };
        let (data, _, _) = collect(vec![delta.clone()]).await;
        assert_eq!(data, framed(&delta));
    }

    #[tokio::test]
    async fn an_error_ends_the_body_with_its_status() {
        let (tx, rx) = mpsc::channel::<Result<SotwResponse, Status>>(2);
        tx.send(Err(Status::invalid_argument("bad node")))
            .await
            .expect("send");
        let mut body = ResponseBody::new(rx);
        let frame = body.frame().await.expect("frame").expect("ok");
        let trailers = frame.into_trailers().expect("trailers");
        assert_eq!(
            trailers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"3"[..])
        );
        assert!(body.frame().await.is_none());
    }
}
