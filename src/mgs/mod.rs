//! ssmmessages (Message Gateway Service): the control channel that brings Run Command jobs and
//! sessions, and the websockets both kinds of channel use. It knows the wire, not processes.

pub mod message;
pub mod rest;
pub mod websocket;
