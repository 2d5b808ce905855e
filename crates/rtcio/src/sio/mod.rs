//! socket.io v4 client (Engine.IO 4 / Socket.IO 5 over WebSocket).

pub mod client;
pub mod packet;
