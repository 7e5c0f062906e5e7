//! The WebSocket message layer on a taken socket (RFC 6455 §5-§7, RFC 7692 §6): a
//! [`Reader`] that turns the client's frames into messages and a [`Writer`] that turns
//! the handler's messages into frames, sharing the socket and its output buffer.
//!
//! The reader works on whatever bytes have arrived, not on whole frames: payload is
//! unmasked, decompressed and checked for UTF-8 as it comes, so a bad text message fails
//! at its first bad byte and a compressed one can never grow past `max_message_size`.
//! Control frames may come between the fragments of a message; pings are answered and
//! close frames echoed through the shared output buffer. A whole unfragmented,
//! uncompressed message that arrived in one read is handed over without a copy.
//!
//! Not here: the opening handshake and negotiation (`mod.rs`, `deflate.rs`), frame
//! bytes (`frame.rs`).

use bytes::{Buf, Bytes, BytesMut};
use std::{
    cell::RefCell,
    future::poll_fn,
    io,
    pin::Pin,
    rc::Rc,
    sync::{Arc, Mutex},
    task::{Context, Poll, Wake, Waker},
    time::Duration,
};
use tokio::io::AsyncWrite;
use tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};

use super::{
    deflate::{Agreed, Deflater, InflateError, Inflater},
    frame::{self, Header, OpCode},
    Message, Utf8Bytes,
};
use crate::{
    error::{Error, Result},
    rt::timeout,
    upgrade::Upgraded,
};

/// How much the reader asks the socket for at least, per read.
const READ_CHUNK: usize = 16 * 1024;
/// How much it asks for at most, while a large frame is arriving.
const MAX_READ_CHUNK: usize = 256 * 1024;
/// Replies (pongs, close) the reader queued and the client does not read: past this
/// much the reader stops reading until they are written, so a client that pings
/// without reading cannot grow the buffer without bound.
const OUT_HIGH: usize = 64 * 1024;

/// The limits and timers both halves need.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) max_message_size: usize,
    pub(crate) max_frame_size: usize,
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) close_timeout: Duration,
}

/// Builds the two halves over `socket`, with permessage-deflate when it was agreed.
pub(crate) fn new(socket: Upgraded, config: Config, deflate: Option<&Agreed>) -> (Reader, Writer) {
    let shared = Rc::new(RefCell::new(Shared {
        io: socket,
        out: BytesMut::with_capacity(4096),
        close_sent: false,
        waiters: None,
    }));
    let reader = Reader {
        shared: shared.clone(),
        buf: BytesMut::with_capacity(READ_CHUNK),
        frame: None,
        message: None,
        inflater: deflate.map(Inflater::new),
        config,
        state: ReadState::Open,
    };
    let writer = Writer {
        shared,
        deflater: deflate.map(Deflater::new),
        scratch: Vec::new(),
    };
    (reader, writer)
}

/// Lets the two halves be used by two tasks: from then on a wait for room to write
/// wakes both, since either may be the one writing (the reader writes pongs).
pub(crate) fn split(reader: &Reader) {
    let waiters = Arc::new(WriteWaiters::default());
    let waker = Waker::from(waiters.clone());
    reader.shared.borrow_mut().waiters = Some((waiters, waker));
}

// ===== the shared socket =====

/// Which half is waiting to write.
#[derive(Clone, Copy, Debug)]
enum Half {
    Reader = 0,
    Writer = 1,
}

/// What both halves own together. Borrowed only inside a poll, never across an await.
struct Shared {
    io: Upgraded,
    /// Encoded frames not yet written: the writer's messages and the reader's replies.
    out: BytesMut,
    /// A close frame went out (or is in `out`): nothing may follow it (RFC 6455 §5.5.1).
    close_sent: bool,
    /// Once split: the tasks of both halves waiting for room to write, and the waker
    /// given to the socket that wakes them both. The socket keeps one waker per
    /// direction, so without it the half that wrote last would steal the other's wakeup.
    waiters: Option<(Arc<WriteWaiters>, Waker)>,
}

impl Shared {
    fn queue(&mut self, opcode: OpCode, payload: &[u8]) {
        frame::encode_header(&mut self.out, true, false, opcode, payload.len());
        self.out.extend_from_slice(payload);
    }

    /// Writes all of `out`, then flushes the socket (TLS buffers).
    fn poll_flush(&mut self, cx: &mut Context<'_>, half: Half) -> Poll<io::Result<()>> {
        match &self.waiters {
            None => write_all(&mut self.io, &mut self.out, cx),
            Some((waiters, waker)) => {
                waiters.register(half, cx.waker());
                let waker = waker.clone();
                write_all(
                    &mut self.io,
                    &mut self.out,
                    &mut Context::from_waker(&waker),
                )
            }
        }
    }
}

fn write_all(io: &mut Upgraded, out: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    while !out.is_empty() {
        match Pin::new(&mut *io).poll_write(cx, out) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => out.advance(n),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    Pin::new(io).poll_flush(cx)
}

/// The wakers of the two halves' tasks waiting to write.
#[derive(Default)]
struct WriteWaiters {
    slots: Mutex<[Option<Waker>; 2]>,
}

impl WriteWaiters {
    fn register(&self, half: Half, waker: &Waker) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match &slots[half as usize] {
            Some(w) if w.will_wake(waker) => {}
            _ => slots[half as usize] = Some(waker.clone()),
        }
    }
}

impl Wake for WriteWaiters {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Taken out first: a waker must not run under our lock.
        let wakers = std::mem::take(&mut *self.slots.lock().unwrap_or_else(|e| e.into_inner()));
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }
}

// ===== the reader =====

/// The receiving half: frames in, messages out.
pub(crate) struct Reader {
    shared: Rc<RefCell<Shared>>,
    /// Bytes read and not yet consumed; a frame's payload is consumed as it arrives.
    buf: BytesMut,
    /// The frame being received, once its header is parsed.
    frame: Option<FrameState>,
    /// The data message being received, from its first frame's header to its last
    /// frame's end; control frames may come in between.
    message: Option<Partial>,
    /// With permessage-deflate.
    inflater: Option<Inflater>,
    pub(crate) config: Config,
    state: ReadState,
}

/// The reader's life: open, then closed by a close frame or EOF, or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadState {
    Open,
    /// The close handshake is done or the peer went away: `recv` returns `None`.
    Closed,
    /// The peer broke the protocol and was sent a close code: `recv` fails.
    Failed,
}

struct FrameState {
    header: Header,
    /// Payload bytes consumed so far (also the masking offset).
    received: u64,
}

struct Partial {
    text: bool,
    /// RSV1 on its first frame: the payload is deflated (RFC 7692 §6.1).
    compressed: bool,
    /// The payload so far, unmasked and decompressed.
    data: Vec<u8>,
    /// `data[..utf8_valid]` is known to be UTF-8; at most three bytes of an incomplete
    /// character follow it.
    utf8_valid: usize,
}

impl Partial {
    /// Checks the text received since the last check; `complete` at the message's end,
    /// when an unfinished character is an error too.
    fn check_utf8(&mut self, complete: bool) -> std::result::Result<(), Fail> {
        match std::str::from_utf8(&self.data[self.utf8_valid..]) {
            Ok(_) => self.utf8_valid = self.data.len(),
            Err(e) if e.error_len().is_none() && !complete => self.utf8_valid += e.valid_up_to(),
            Err(_) => return Err(Fail::utf8()),
        }
        Ok(())
    }

    fn into_message(self) -> Message {
        let data = Bytes::from(self.data);
        if self.text {
            text_message(data)
        } else {
            Message::Binary(data)
        }
    }
}

/// A text message from bytes already checked to be UTF-8.
fn text_message(data: Bytes) -> Message {
    debug_assert!(std::str::from_utf8(&data).is_ok());
    // SAFETY: every caller has validated `data` as UTF-8 (whole, or piece by piece as
    // it arrived with `Partial::check_utf8`), and `Bytes` is immutable.
    #[allow(unsafe_code)]
    let text = unsafe { Utf8Bytes::from_bytes_unchecked(data) };
    Message::Text(text)
}

/// A protocol failure: the close code the client is sent, and the handler's error.
#[derive(Debug)]
pub(crate) struct Fail {
    code: u16,
    error: Error,
}

impl Fail {
    fn protocol(what: &'static str) -> Fail {
        Fail {
            code: 1002,
            error: Error::protocol(400, what),
        }
    }

    fn too_big() -> Fail {
        Fail {
            code: 1009,
            error: Error::protocol(413, "WebSocket message or frame too big"),
        }
    }

    fn utf8() -> Fail {
        Fail {
            code: 1007,
            error: Error::protocol(400, "WebSocket text that is not UTF-8"),
        }
    }

    fn inflate(e: InflateError) -> Fail {
        match e {
            InflateError::TooBig => Fail::too_big(),
            InflateError::Corrupt => Fail {
                code: 1007,
                error: Error::protocol(400, "WebSocket message that does not decompress"),
            },
        }
    }
}

/// What the buffered bytes amounted to.
enum Event {
    Message(Message),
    /// The client's close frame, checked.
    Close(Option<CloseFrame>),
}

impl Reader {
    /// The next message, with the keepalive of `ping_interval` when set.
    pub(crate) async fn recv(&mut self) -> Result<Option<Message>> {
        let Some(interval) = self.config.ping_interval else {
            return self.recv_now().await;
        };
        // `recv_now` keeps its state in `self`, so a timeout may drop it at any await.
        if let Ok(next) = timeout(interval, self.recv_now()).await {
            return next;
        }
        {
            let mut shared = self.shared.borrow_mut();
            if !shared.close_sent {
                shared.queue(OpCode::Ping, b"onstream");
            }
        }
        match timeout(interval, async {
            self.flush().await?;
            self.recv_now().await
        })
        .await
        {
            Ok(next) => next,
            Err(_) => {
                self.state = ReadState::Failed;
                Err(Error::timeout("the WebSocket peer stopped answering pings"))
            }
        }
    }

    async fn recv_now(&mut self) -> Result<Option<Message>> {
        loop {
            match self.state {
                ReadState::Open => {}
                ReadState::Closed => return Ok(None),
                ReadState::Failed => return Err(Error::closed("WebSocket failed")),
            }
            match self.process() {
                Ok(Some(Event::Message(msg))) => {
                    if msg.is_ping() {
                        // Send the pong now if the socket takes it; else with the
                        // next read or write.
                        poll_fn(|cx| {
                            let _ = self.shared.borrow_mut().poll_flush(cx, Half::Reader);
                            Poll::Ready(())
                        })
                        .await;
                    }
                    return Ok(Some(msg));
                }
                Ok(Some(Event::Close(frame))) => {
                    self.state = ReadState::Closed;
                    {
                        let mut shared = self.shared.borrow_mut();
                        if !shared.close_sent {
                            // Echo the status code (RFC 6455 §5.5.1).
                            shared.close_sent = true;
                            let code = frame.as_ref().map(|f| u16::from(f.code).to_be_bytes());
                            shared.queue(OpCode::Close, code.as_ref().map_or(&[][..], |c| &c[..]));
                        }
                    }
                    // Our side of the handshake is done before the handler hears of it;
                    // a client that does not read is given up on.
                    let _ = timeout(self.config.close_timeout, self.flush()).await;
                    return Ok(Some(Message::Close(frame)));
                }
                Ok(None) => {}
                Err(fail) => return Err(self.fail(fail).await),
            }
            let n = match poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(n) => n,
                Err(e) => {
                    self.state = ReadState::Failed;
                    return Err(Error::peer(e));
                }
            };
            if n == 0 {
                self.state = ReadState::Closed;
                if self.frame.is_some() || self.message.is_some() {
                    return Err(Error::peer(io::ErrorKind::UnexpectedEof.into()));
                }
                return Ok(None);
            }
        }
    }

    /// Tells the client why (RFC 6455 §7.4.1) and fails.
    async fn fail(&mut self, fail: Fail) -> Error {
        self.state = ReadState::Failed;
        {
            let mut shared = self.shared.borrow_mut();
            if !shared.close_sent {
                shared.close_sent = true;
                shared.queue(OpCode::Close, &fail.code.to_be_bytes());
            }
        }
        let _ = timeout(self.config.close_timeout, self.flush()).await;
        fail.error
    }

    async fn flush(&self) -> Result<()> {
        poll_fn(|cx| self.shared.borrow_mut().poll_flush(cx, Half::Reader))
            .await
            .map_err(Error::peer)
    }

    /// Reads more, writing queued replies first when there are many.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut shared = self.shared.borrow_mut();
        if !shared.out.is_empty() {
            match shared.poll_flush(cx, Half::Reader) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if shared.out.len() > OUT_HIGH => return Poll::Pending,
                _ => {}
            }
        }
        let want = match &self.frame {
            Some(f) => {
                (f.header.len - f.received).clamp(READ_CHUNK as u64, MAX_READ_CHUNK as u64) as usize
            }
            None => READ_CHUNK,
        };
        self.buf.reserve(want);
        shared.io.poll_read_buf(&mut self.buf, cx)
    }

    /// Consumes buffered bytes: an event, `None` for "read more", or a failure.
    fn process(&mut self) -> std::result::Result<Option<Event>, Fail> {
        let limit = self.config.max_message_size;
        loop {
            if self.frame.is_none() {
                let parsed =
                    frame::parse_header(&self.buf).map_err(|e| Fail::protocol(e.describe()))?;
                let Some((header, header_len)) = parsed else {
                    return Ok(None);
                };
                self.start_frame(&header)?;
                self.buf.advance(header_len);
                self.frame = Some(FrameState {
                    header,
                    received: 0,
                });
            }
            let frame = self.frame.as_mut().expect("set above");
            let header = frame.header;
            let remaining = header.len - frame.received;

            if header.opcode.is_control() {
                // At most 125 bytes: wait for all of them.
                if (self.buf.len() as u64) < remaining {
                    return Ok(None);
                }
                let mut payload = self.buf.split_to(remaining as usize);
                frame::apply_mask(&mut payload, header.mask, 0);
                self.frame = None;
                return self.control(header.opcode, payload.freeze()).map(Some);
            }

            let msg = self.message.as_mut().expect("start_frame began a message");
            if header.fin
                && frame.received == 0
                && !msg.compressed
                && msg.data.is_empty()
                && self.buf.len() as u64 >= remaining
            {
                // A whole message in one frame, all here: no copy.
                let text = msg.text;
                self.message = None;
                self.frame = None;
                let mut payload = self.buf.split_to(remaining as usize);
                frame::apply_mask(&mut payload, header.mask, 0);
                let payload = payload.freeze();
                return if !text {
                    Ok(Some(Event::Message(Message::Binary(payload))))
                } else if std::str::from_utf8(&payload).is_ok() {
                    Ok(Some(Event::Message(text_message(payload))))
                } else {
                    Err(Fail::utf8())
                };
            }

            let n = remaining.min(self.buf.len() as u64) as usize;
            if n == 0 && remaining > 0 {
                return Ok(None);
            }
            frame::apply_mask(&mut self.buf[..n], header.mask, frame.received);
            if msg.compressed {
                let inflater = self.inflater.as_mut().expect("RSV1 only with deflate");
                inflater
                    .push(&self.buf[..n], &mut msg.data, limit)
                    .map_err(Fail::inflate)?;
            } else {
                msg.data.extend_from_slice(&self.buf[..n]);
            }
            self.buf.advance(n);
            frame.received += n as u64;
            if msg.text {
                // Fail fast: at the first bad byte, not at the message's end.
                msg.check_utf8(false)?;
            }
            if frame.received < header.len {
                return Ok(None);
            }
            self.frame = None;
            if !header.fin {
                continue;
            }
            let mut msg = self.message.take().expect("checked above");
            if msg.compressed {
                let inflater = self.inflater.as_mut().expect("RSV1 only with deflate");
                inflater
                    .finish(&mut msg.data, limit)
                    .map_err(Fail::inflate)?;
            }
            if msg.text {
                msg.check_utf8(true)?;
            }
            return Ok(Some(Event::Message(msg.into_message())));
        }
    }

    /// Checks a frame's header against the message in progress and the limits.
    fn start_frame(&mut self, h: &Header) -> std::result::Result<(), Fail> {
        if h.opcode.is_control() {
            if h.rsv1 {
                return Err(Fail::protocol("WebSocket control frame with RSV1 set"));
            }
            return Ok(());
        }
        if h.len > self.config.max_frame_size as u64 {
            return Err(Fail::too_big());
        }
        let limit = self.config.max_message_size as u64;
        match (h.opcode, &self.message) {
            (OpCode::Continuation, None) => Err(Fail::protocol(
                "WebSocket continuation frame without a message to continue",
            )),
            (OpCode::Continuation, Some(msg)) => {
                if h.rsv1 {
                    // RSV1 marks a message's first frame only (RFC 7692 §6.1).
                    return Err(Fail::protocol("WebSocket continuation frame with RSV1 set"));
                }
                if !msg.compressed && msg.data.len() as u64 + h.len > limit {
                    return Err(Fail::too_big());
                }
                Ok(())
            }
            (_, Some(_)) => Err(Fail::protocol(
                "WebSocket message started inside a fragmented one",
            )),
            (opcode, None) => {
                if h.rsv1 && self.inflater.is_none() {
                    return Err(Fail::protocol(
                        "WebSocket frame with RSV1 set and no extension agreed",
                    ));
                }
                if !h.rsv1 && h.len > limit {
                    return Err(Fail::too_big());
                }
                self.message = Some(Partial {
                    text: opcode == OpCode::Text,
                    compressed: h.rsv1,
                    data: Vec::new(),
                    utf8_valid: 0,
                });
                Ok(())
            }
        }
    }

    fn control(&mut self, opcode: OpCode, payload: Bytes) -> std::result::Result<Event, Fail> {
        match opcode {
            OpCode::Ping => {
                let mut shared = self.shared.borrow_mut();
                if !shared.close_sent {
                    shared.queue(OpCode::Pong, &payload);
                }
                Ok(Event::Message(Message::Ping(payload)))
            }
            OpCode::Pong => Ok(Event::Message(Message::Pong(payload))),
            _ => {
                // RFC 6455 §5.5.1: empty, or a code and a UTF-8 reason.
                if payload.is_empty() {
                    return Ok(Event::Close(None));
                }
                if payload.len() < 2 {
                    return Err(Fail::protocol("WebSocket close frame of one byte"));
                }
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                if !frame::is_valid_close_code(code) {
                    return Err(Fail::protocol("WebSocket close frame with an invalid code"));
                }
                let reason = Utf8Bytes::try_from(payload.slice(2..)).map_err(|_| Fail::utf8())?;
                Ok(Event::Close(Some(CloseFrame {
                    code: CloseCode::from(code),
                    reason,
                })))
            }
        }
    }
}

// ===== the writer =====

/// The sending half: messages in, frames out.
pub(crate) struct Writer {
    shared: Rc<RefCell<Shared>>,
    /// With permessage-deflate.
    deflater: Option<Deflater>,
    /// The compressed payload of the message being sent.
    scratch: Vec<u8>,
}

impl Writer {
    /// Sends `msg`: queued as a frame, then written out.
    pub(crate) async fn send(&mut self, msg: Message) -> Result<()> {
        self.queue(msg)?;
        poll_fn(|cx| self.shared.borrow_mut().poll_flush(cx, Half::Writer))
            .await
            .map_err(Error::peer)
    }

    pub(crate) fn close_sent(&self) -> bool {
        self.shared.borrow().close_sent
    }

    fn queue(&mut self, msg: Message) -> Result<()> {
        let mut shared = self.shared.borrow_mut();
        if shared.close_sent {
            return Err(Error::closed("WebSocket close frame already sent"));
        }
        let (opcode, data) = match msg {
            Message::Text(text) => (OpCode::Text, Bytes::from(text)),
            Message::Binary(data) => (OpCode::Binary, data),
            Message::Ping(data) => (OpCode::Ping, data),
            Message::Pong(data) => (OpCode::Pong, data),
            Message::Close(frame) => {
                let mut payload = Vec::new();
                if let Some(f) = frame {
                    payload.extend_from_slice(&u16::from(f.code).to_be_bytes());
                    payload.extend_from_slice(f.reason.as_bytes());
                }
                (OpCode::Close, Bytes::from(payload))
            }
            Message::Frame(_) => return Err(Error::usage("raw WebSocket frames cannot be sent")),
        };
        if opcode.is_control() {
            if data.len() > frame::MAX_CONTROL_PAYLOAD {
                return Err(Error::usage(
                    "a WebSocket control frame carries at most 125 bytes",
                ));
            }
            shared.close_sent |= opcode == OpCode::Close;
            shared.queue(opcode, &data);
            return Ok(());
        }
        match &mut self.deflater {
            Some(deflater) if deflater.wants(data.len()) => {
                deflater
                    .compress(&data, &mut self.scratch)
                    .map_err(Error::from)?;
                frame::encode_header(&mut shared.out, true, true, opcode, self.scratch.len());
                shared.out.extend_from_slice(&self.scratch);
            }
            _ => {
                frame::encode_header(&mut shared.out, true, false, opcode, data.len());
                shared.out.extend_from_slice(&data);
            }
        }
        Ok(())
    }
}
