//! socketioxide-redis's pub/sub driver for the `redis` crate, with a response timeout of our
//! choosing. The stock driver's connection keeps redis-rs's 500 ms default: with several server
//! processes, Redis and the clients on two busy cores, adapter requests and publishes timed out
//! under a burst of joins and leaves, and the announcements they carried were lost (50 000
//! sockets over 4 processes: up to 2 500 of 37 500 leave announcements missing). The driver
//! itself is the stock one (same channels, same push handling), so the wire to Redis and to
//! other processes is unchanged.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, FromRedisValue, PushInfo, PushKind};
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::sync::mpsc;

/// How long a Redis request may take before it fails. Long: a slow answer under load is still
/// an answer, and a failed one loses a cluster-wide announcement.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an adapter request (`fetch_sockets`: a join's membership read) waits for the other
/// processes' answers (socketioxide-redis's default, set explicitly because the join relies on it).
/// At that point the adapter returns what it has, silently: a read that took this long may lack
/// the members of a process that answered late (see `session::join_locked`).
pub(crate) const ADAPTER_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

type Handlers = Arc<RwLock<HashMap<String, mpsc::Sender<ChanItem>>>>;

/// The pub/sub driver of the Redis adapter (see the module docs).
#[derive(Clone)]
pub(crate) struct TimedRedisDriver {
    handlers: Handlers,
    conn: MultiplexedConnection,
}

/// A pushed pub/sub message: (channel, payload); `None` for other pushes or malformed ones.
fn read_push(msg: PushInfo) -> Option<ChanItem> {
    if !matches!(msg.kind, PushKind::Message | PushKind::SMessage) || msg.data.len() < 2 {
        return None;
    }
    let mut data = msg.data.into_iter();
    let channel = String::from_redis_value(data.next()?).ok()?;
    let payload = Vec::<u8>::from_redis_value(data.next()?).ok()?;
    Some((channel, payload))
}

fn deliver(msg: PushInfo, handlers: &Handlers) {
    let Some((chan, payload)) = read_push(msg) else {
        return;
    };
    let handlers = handlers.read().unwrap_or_else(|e| e.into_inner());
    if let Some(tx) = handlers.get(&chan)
        && let Err(e) = tx.try_send((chan, payload))
    {
        // The adapter's buffer (`RedisAdapterConfig::with_stream_buffer`) is full: this process
        // is far behind the cluster.
        tracing::warn!("redis pub/sub buffer full, message dropped: {e}");
    }
}

impl TimedRedisDriver {
    /// Connects with [`RESPONSE_TIMEOUT`].
    pub(crate) async fn new(client: &redis::Client) -> Result<Self, redis::RedisError> {
        let handlers: Handlers = Arc::default();
        let pushes = handlers.clone();
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_push_sender(move |msg| {
                deliver(msg, &pushes);
                Ok::<(), std::convert::Infallible>(())
            });
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(TimedRedisDriver { handlers, conn })
    }
}

impl Driver for TimedRedisDriver {
    type Error = redis::RedisError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), Self::Error> {
        self.conn
            .clone()
            .publish::<_, _, redis::Value>(chan, val)
            .await?;
        Ok(())
    }

    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, Self::Error> {
        self.conn.clone().subscribe(chan.as_str()).await?;
        let (tx, rx) = mpsc::channel(size);
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(chan, tx);
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), Self::Error> {
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&chan);
        self.conn.clone().unsubscribe(chan).await?;
        Ok(())
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, Self::Error> {
        let mut conn = self.conn.clone();
        let (_, count): (String, u16) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(chan)
            .query_async(&mut conn)
            .await?;
        Ok(count)
    }
}
