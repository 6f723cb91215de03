//! The Speech API's WebSocket frame limits (the contract: binary audio frames up to 1 MiB, text
//! control messages up to 64 KiB; larger closes the stream with 1009 and a reason), the same in
//! every service that takes a client's stream.
//!
//! The WebSocket library refuses a frame over the limit from its header, before reading its payload,
//! so a frame announced as 40 MiB costs nothing; the connection stays writable for the close frame.
//! The connection is then kept a moment ([`LINGER`]) before it is dropped: the client is still
//! writing the frame, and a connection closed with unread data is reset, which can destroy the close
//! frame before the client reads it.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use tokio_tungstenite::tungstenite;

/// Largest message (and frame) a client may send: an audio frame.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Largest text (control) message.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// The close code for a frame over the limits.
pub const CLOSE_TOO_LARGE: u16 = 1009;
/// The close reason for it (a close reason has at most 123 bytes).
pub const TOO_LARGE_REASON: &str = "frame too large: audio frames up to 1 MiB, text frames up to 64 KiB";

/// The upgrade with the contract's frame limits (the library's defaults are 64 MiB / 16 MiB).
pub fn limited(upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
    upgrade.max_message_size(MAX_MESSAGE_BYTES).max_frame_size(MAX_MESSAGE_BYTES)
}

/// Whether a receive error is a frame or message over the limits (the stream is then closed with
/// [`too_large`]; any other error is a broken connection).
pub fn is_too_large(error: &axum::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|inner| inner.downcast_ref::<tungstenite::Error>())
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

/// Whether a text message is over [`MAX_TEXT_BYTES`].
pub fn text_too_large(text: &str) -> bool {
    text.len() > MAX_TEXT_BYTES
}

/// How long a connection closed for a frame over the limits is kept before it is dropped.
pub const LINGER: Duration = Duration::from_secs(1);

/// The close message for a frame over the limits.
pub fn too_large() -> Message {
    Message::Close(Some(CloseFrame { code: CLOSE_TOO_LARGE, reason: TOO_LARGE_REASON.into() }))
}

/// Closes `socket` for a frame over the limits: the close frame with its reason, then [`LINGER`]
/// for the client to read it (nothing more is read from the socket).
pub async fn close_too_large(socket: &mut WebSocket) {
    if socket.send(too_large()).await.is_ok() {
        tokio::time::sleep(LINGER).await;
    }
}

/// After this side sent its close frame: reads (and drops) what the client still sends until its
/// own close frame, for at most [`LINGER`]. Dropping a socket with unread data makes the close a
/// TCP reset, and the client would never read the close frame and its code.
pub async fn finish_close(socket: &mut WebSocket) {
    let _ = tokio::time::timeout(LINGER, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use axum::extract::ws::WebSocket;
    use axum::routing::get;
    use axum::Router;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message as Client;

    use super::*;

    /// Echoes the size of each message; closes with 1009 on one over the limits.
    async fn echo_sizes(mut socket: WebSocket) {
        while let Some(received) = socket.recv().await {
            let answer = match received {
                Ok(Message::Binary(bytes)) => Message::Text(bytes.len().to_string().into()),
                Ok(Message::Text(text)) if !text_too_large(text.as_str()) => {
                    Message::Text(text.len().to_string().into())
                }
                Ok(Message::Text(_)) => return close_too_large(&mut socket).await,
                Ok(_) => continue,
                Err(e) if is_too_large(&e) => return close_too_large(&mut socket).await,
                Err(_) => return,
            };
            let _ = socket.send(answer).await;
        }
    }

    /// What a client sees after sending `message`: the answer's text, or the close code and reason.
    async fn send_one(message: Client) -> Result<String, (u16, String)> {
        let app = Router::new()
            .route("/", get(|upgrade: WebSocketUpgrade| async { limited(upgrade).on_upgrade(echo_sizes) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = tungstenite::protocol::WebSocketConfig::default().max_frame_size(None).max_message_size(None);
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(format!("ws://{addr}/"), Some(config), false).await.unwrap();
        // As a browser does: the frame is written while what the server says is read (the server
        // stops reading a frame over the limit, so its write may never finish).
        let (mut write, mut read) = ws.split();
        tokio::spawn(async move {
            let _ = write.send(message).await;
        });
        match read.next().await {
            Some(Ok(Client::Text(text))) => Ok(text.to_string()),
            Some(Ok(Client::Close(Some(frame)))) => Err((u16::from(frame.code), frame.reason.to_string())),
            other => panic!("neither an answer nor a close frame: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_closed_with_1009_and_a_reason() {
        assert_eq!(
            send_one(Client::Binary(vec![0u8; MAX_MESSAGE_BYTES].into())).await,
            Ok(MAX_MESSAGE_BYTES.to_string())
        );
        let closed = Err((u16::from(CloseCode::Size), TOO_LARGE_REASON.to_owned()));
        assert_eq!(send_one(Client::Binary(vec![0u8; 40 * 1024 * 1024].into())).await, closed);
        assert_eq!(send_one(Client::Binary(vec![0u8; MAX_MESSAGE_BYTES + 1].into())).await, closed);
        assert_eq!(send_one(Client::Text("x".repeat(MAX_TEXT_BYTES).into())).await, Ok(MAX_TEXT_BYTES.to_string()));
        assert_eq!(send_one(Client::Text("x".repeat(MAX_TEXT_BYTES + 1).into())).await, closed);
    }
}
