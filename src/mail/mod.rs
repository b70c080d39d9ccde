//! Outgoing mail: messages are written to the outbox inside the transaction that creates them,
//! and the [`Dispatcher`] delivers them afterwards, retrying until the transport takes them.

mod dispatcher;
mod outbox;
mod templates;
mod transport;

pub use dispatcher::{Dispatcher, RetryPolicy};
pub use outbox::{OutboxSignal, enqueue};
pub use templates::{OutgoingEmail, confirmation_email};
pub use transport::Transport;
