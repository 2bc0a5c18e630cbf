//! Event sourcing: an account aggregate whose commands append events to a stream; its
//! state is rebuilt by replaying the stream with `History`, from the start or from a
//! snapshot id; a projection consumer keeps a read model of every balance.

use std::collections::HashMap;
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use streamx::{Consumer, HandlerError, History, Message, MessageId, Producer, Runtime};

use crate::{wait_settled, RecipeError};

/// What happened to an account: the only thing stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AccountEvent {
    /// The account was opened.
    Opened {
        /// Account id.
        account: String,
        /// Its owner.
        owner: String,
    },
    /// Money came in.
    Deposited {
        /// Account id.
        account: String,
        /// Cents.
        amount: i64,
    },
    /// Money went out.
    Withdrawn {
        /// Account id.
        account: String,
        /// Cents.
        amount: i64,
    },
}

impl AccountEvent {
    /// The account the event belongs to.
    pub fn account(&self) -> &str {
        match self {
            AccountEvent::Opened { account, .. }
            | AccountEvent::Deposited { account, .. }
            | AccountEvent::Withdrawn { account, .. } => account,
        }
    }
}

/// What a client asks for; checked against the current state before an event is appended.
#[derive(Debug, Clone)]
pub enum Command {
    /// Open `account` for `owner`.
    Open(&'static str, &'static str),
    /// Deposit cents.
    Deposit(&'static str, i64),
    /// Withdraw cents (refused beyond the balance).
    Withdraw(&'static str, i64),
}

/// The aggregate's state, a fold of its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// Who owns it (`None` until opened).
    pub owner: Option<String>,
    /// Balance in cents.
    pub balance: i64,
    /// Events applied.
    pub version: u64,
}

impl Account {
    /// The state after `event`.
    pub fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner, .. } => self.owner = Some(owner.clone()),
            AccountEvent::Deposited { amount, .. } => self.balance += amount,
            AccountEvent::Withdrawn { amount, .. } => self.balance -= amount,
        }
        self.version += 1;
    }

    /// The event `command` produces in this state, or why it is refused.
    pub fn decide(&self, command: &Command) -> Result<AccountEvent, String> {
        let opened = self.owner.is_some();
        match *command {
            Command::Open(account, _) if opened => Err(format!("{account} is already open")),
            Command::Open(account, owner) => Ok(AccountEvent::Opened { account: account.into(), owner: owner.into() }),
            Command::Deposit(account, _) | Command::Withdraw(account, _) if !opened => {
                Err(format!("{account} is not open"))
            }
            Command::Deposit(account, amount) => Ok(AccountEvent::Deposited { account: account.into(), amount }),
            Command::Withdraw(account, amount) if amount > self.balance => {
                Err(format!("{account}: cannot withdraw {amount}, the balance is {}", self.balance))
            }
            Command::Withdraw(account, amount) => Ok(AccountEvent::Withdrawn { account: account.into(), amount }),
        }
    }
}

/// An account's state as of event `at`, stored so a rebuild need not start at the beginning.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// Account id.
    pub account: String,
    /// The state.
    pub state: Account,
    /// The id of the last event folded into `state`.
    pub at: MessageId,
}

/// The command side: loads an account from its events, decides, appends.
pub struct Bank {
    producer: Producer,
    history: History,
    events: String,
    snapshots: String,
}

impl Bank {
    /// Rebuilds `account` by replaying every event from the start of the stream; the
    /// state and the id of its last event.
    pub async fn load(&self, account: &str) -> Result<(Account, Option<MessageId>), RecipeError> {
        self.replay(account, Account::default(), ..).await
    }

    /// Rebuilds `account` from `snapshot`: only the events after its id are read.
    pub async fn load_from(&self, snapshot: &Snapshot) -> Result<(Account, Option<MessageId>), RecipeError> {
        let after = (Bound::Excluded(snapshot.at), Bound::Unbounded);
        let (state, last) = self.replay(&snapshot.account, snapshot.state.clone(), after).await?;
        Ok((state, last.or(Some(snapshot.at))))
    }

    async fn replay(
        &self,
        account: &str,
        mut state: Account,
        range: impl std::ops::RangeBounds<MessageId>,
    ) -> Result<(Account, Option<MessageId>), RecipeError> {
        let mut events = self.history.read::<AccountEvent>(&self.events, range);
        let mut last = None;
        while let Some(msg) = events.try_next().await? {
            if msg.payload().account() == account {
                state.apply(msg.payload());
                last = Some(msg.id());
            }
        }
        Ok((state, last))
    }

    /// Runs `command`: loads the account, decides, appends the event. `Ok(Err(reason))`
    /// when the command is refused. (One writer per account here; concurrent writers would
    /// check the version they loaded before appending, e.g. in a Lua script.)
    pub async fn execute(&self, command: &Command) -> Result<Result<MessageId, String>, RecipeError> {
        let account = match command {
            Command::Open(a, _) | Command::Deposit(a, _) | Command::Withdraw(a, _) => a,
        };
        let (state, _) = self.load(account).await?;
        match state.decide(command) {
            Ok(event) => Ok(Ok(self.producer.publish(&self.events, &event).await?)),
            Err(reason) => Ok(Err(reason)),
        }
    }

    /// Stores a snapshot of `account` as of now.
    pub async fn snapshot(&self, account: &str) -> Result<Snapshot, RecipeError> {
        let (state, last) = self.load(account).await?;
        let snapshot = Snapshot { account: account.into(), state, at: last.unwrap_or(MessageId::MIN) };
        self.producer.publish(&self.snapshots, &snapshot).await?;
        Ok(snapshot)
    }

    /// The latest stored snapshot of `account`.
    pub async fn latest_snapshot(&self, account: &str) -> Result<Option<Snapshot>, RecipeError> {
        let all: Vec<Message<Snapshot>> = self.history.read(&self.snapshots, ..).try_collect().await?;
        Ok(all.into_iter().map(Message::into_payload).filter(|s| s.account == account).last())
    }
}

/// The read model the projection keeps: balance per account, and the id of the last event
/// applied (events at or before it are skipped, so a redelivery applies nothing twice).
#[derive(Debug, Default)]
pub struct Balances(Mutex<HashMap<String, (i64, MessageId)>>);

impl Balances {
    /// The balance of every account, sorted by account.
    pub fn snapshot(&self) -> Vec<(String, i64)> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = map.iter().map(|(k, (balance, _))| (k.clone(), *balance)).collect();
        all.sort();
        all
    }
}

/// The projection's handler.
async fn project(msg: Message<AccountEvent>) -> Result<(), HandlerError> {
    let balances = msg.state::<Arc<Balances>>().ok_or("no read model in the state")?;
    let mut map = balances.0.lock().unwrap_or_else(|e| e.into_inner());
    let (balance, last) = map.entry(msg.payload().account().to_string()).or_insert((0, MessageId::MIN));
    if msg.id() <= *last {
        return Ok(()); // already applied
    }
    match msg.payload() {
        AccountEvent::Opened { .. } => {}
        AccountEvent::Deposited { amount, .. } => *balance += amount,
        AccountEvent::Withdrawn { amount, .. } => *balance -= amount,
    }
    *last = msg.id();
    Ok(())
}

/// What the recipe did.
#[derive(Debug)]
pub struct Report {
    /// Events appended.
    pub events: usize,
    /// Commands refused, with the reason.
    pub rejected: Vec<String>,
    /// `acc-1` rebuilt from the start of the stream.
    pub replayed: Account,
    /// The snapshot of `acc-1` taken half-way.
    pub snapshot: Snapshot,
    /// `acc-1` rebuilt from that snapshot.
    pub from_snapshot: Account,
    /// The projection's read model.
    pub read_model: Vec<(String, i64)>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "appended {} events; refused {} command(s): {:?}",
            self.events,
            self.rejected.len(),
            self.rejected
        )?;
        writeln!(f, "acc-1 replayed from the start:       {:?}", self.replayed)?;
        writeln!(f, "acc-1 snapshot at {}:    {:?}", self.snapshot.at, self.snapshot.state)?;
        writeln!(f, "acc-1 replayed from the snapshot:    {:?}", self.from_snapshot)?;
        write!(f, "read model kept by the projection:   {:?}", self.read_model)
    }
}

/// The commands the recipe runs; a snapshot of `acc-1` is taken after the first `SNAPSHOT_AFTER`.
pub const COMMANDS: [Command; 10] = [
    Command::Open("acc-1", "alice"),
    Command::Deposit("acc-1", 10_000),
    Command::Open("acc-2", "bob"),
    Command::Deposit("acc-1", 5_000),
    Command::Withdraw("acc-1", 3_000),
    Command::Deposit("acc-2", 7_000),
    Command::Deposit("acc-1", 1_000),
    Command::Withdraw("acc-1", 50_000), // refused: more than the balance
    Command::Withdraw("acc-2", 7_000),
    Command::Withdraw("acc-1", 2_000),
];

/// Commands run before the snapshot.
pub const SNAPSHOT_AFTER: usize = 5;

/// Runs the recipe against `url`, with streams `<prefix>.events` and `<prefix>.snapshots`.
pub async fn run(url: String, prefix: String) -> Result<Report, RecipeError> {
    let events = format!("{prefix}.events");
    let bank = Bank {
        producer: Producer::connect(&url).await?,
        history: History::connect(&url).await?,
        events: events.clone(),
        snapshots: format!("{prefix}.snapshots"),
    };
    let balances = Arc::new(Balances::default());
    let running = Runtime::builder()
        .redis_url(&url)
        .registered_consumers(false)
        .consumer(Consumer::new(events, "balances", project).name_as("balances"))
        .state(balances.clone())
        .build()?
        .start()
        .await?;

    let (mut appended, mut rejected, mut snapshot) = (0, Vec::new(), None::<Snapshot>);
    for (i, command) in COMMANDS.iter().enumerate() {
        if i == SNAPSHOT_AFTER {
            snapshot = Some(bank.snapshot("acc-1").await?);
        }
        match bank.execute(command).await? {
            Ok(_) => appended += 1,
            Err(reason) => rejected.push(reason),
        }
    }
    let (replayed, _) = bank.load("acc-1").await?;
    if snapshot.is_none() {
        return Err(RecipeError::Unexpected("no snapshot was taken".into()));
    }
    // Read back from the snapshot stream, as a process starting later would.
    let snapshot = bank
        .latest_snapshot("acc-1")
        .await?
        .ok_or_else(|| RecipeError::Unexpected("the snapshot of acc-1 is not in the stream".into()))?;
    let (from_snapshot, _) = bank.load_from(&snapshot).await?;

    wait_settled(&running, appended as u64, "the projection to apply every event").await?;
    running.shutdown().await?;
    Ok(Report { events: appended, rejected, replayed, snapshot, from_snapshot, read_model: balances.snapshot() })
}
