//! Outgoing mail: messages are written to the outbox inside the transaction that creates them,
//! and the [`Dispatcher`] delivers them afterwards, retrying until the transport takes them.

pub mod admin;
mod dispatcher;
mod outbox;
mod smtp;
mod templates;
mod transport;

pub use dispatcher::{DeliveryPolicy, Dispatcher};
pub use outbox::{EnqueueError, OutboxSignal, enqueue};
pub use templates::{OutgoingEmail, TemplateError, Templates};
pub use transport::Transport;
