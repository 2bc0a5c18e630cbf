//! Run with: `cargo run --example event_sourcing` (the projection, keeping a read model of
//! every balance; needs Redis on 127.0.0.1:6379, or set `STREAMX_REDIS_URL`), then in
//! another terminal `cargo run --example event_sourcing -- commands` (runs ten commands,
//! snapshots `acc-1` half-way) and `cargo run --example event_sourcing -- load acc-1`
//! (rebuilds the account from the start and from its latest snapshot). Stop the projection
//! with Ctrl-C; `-- cleanup` deletes the recipe's keys.
//!
//! Event sourcing: an account aggregate whose commands append events to a stream; its
//! state is rebuilt by replaying the stream with `History`, from the start or from a
//! snapshot id; a projection consumer keeps a read model of every balance.

use std::collections::HashMap;
use std::ops::Bound;
use std::process::ExitCode;
use std::sync::Mutex;

use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use streamx::prelude::*;
use streamx::{History, RedisUrl};
use streamx_examples::{delete_stream_keys, exit, init_logging, subcommand, RecipeError};

const EVENTS: &str = "bank.events";
const SNAPSHOTS: &str = "bank.snapshots";

/// What happened to an account: the only thing stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AccountEvent {
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
    fn account(&self) -> &str {
        match self {
            AccountEvent::Opened { account, .. }
            | AccountEvent::Deposited { account, .. }
            | AccountEvent::Withdrawn { account, .. } => account,
        }
    }
}

/// What a client asks for; checked against the current state before an event is appended.
#[derive(Debug, Clone)]
enum Command {
    /// Open `account` for `owner`.
    Open(&'static str, &'static str),
    /// Deposit cents.
    Deposit(&'static str, i64),
    /// Withdraw cents (refused beyond the balance).
    Withdraw(&'static str, i64),
}

/// The aggregate's state, a fold of its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Account {
    /// Who owns it (`None` until opened).
    owner: Option<String>,
    /// Balance in cents.
    balance: i64,
    /// Events applied.
    version: u64,
}

impl Account {
    /// The state after `event`.
    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner, .. } => self.owner = Some(owner.clone()),
            AccountEvent::Deposited { amount, .. } => self.balance += amount,
            AccountEvent::Withdrawn { amount, .. } => self.balance -= amount,
        }
        self.version += 1;
    }

    /// The event `command` produces in this state, or why it is refused.
    fn decide(&self, command: &Command) -> Result<AccountEvent, String> {
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
struct Snapshot {
    /// Account id.
    account: String,
    /// The state.
    state: Account,
    /// The id of the last event folded into `state`.
    at: MessageId,
}

/// The command side: loads an account from its events, decides, appends.
struct Bank {
    producer: Producer,
    history: History,
}

impl Bank {
    async fn connect() -> Result<Bank, RecipeError> {
        let url = RedisUrl::from_env()?;
        Ok(Bank { producer: Producer::connect_with(&url).await?, history: History::connect_with(&url).await? })
    }

    /// Rebuilds `account` by replaying every event from the start of the stream; the state
    /// and the id of its last event.
    async fn load(&self, account: &str) -> Result<(Account, Option<MessageId>), RecipeError> {
        self.replay(account, Account::default(), ..).await
    }

    /// Rebuilds `account` from `snapshot`: only the events after its id are read.
    async fn load_from(&self, snapshot: &Snapshot) -> Result<(Account, Option<MessageId>), RecipeError> {
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
        let mut events = self.history.read::<AccountEvent>(EVENTS, range);
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
    async fn execute(&self, command: &Command) -> Result<Result<MessageId, String>, RecipeError> {
        let account = match command {
            Command::Open(a, _) | Command::Deposit(a, _) | Command::Withdraw(a, _) => a,
        };
        let (state, _) = self.load(account).await?;
        match state.decide(command) {
            Ok(event) => Ok(Ok(self.producer.publish(EVENTS, &event).await?)),
            Err(reason) => Ok(Err(reason)),
        }
    }

    /// Stores a snapshot of `account` as of now.
    async fn snapshot(&self, account: &str) -> Result<Snapshot, RecipeError> {
        let (state, last) = self.load(account).await?;
        let snapshot = Snapshot { account: account.into(), state, at: last.unwrap_or(MessageId::MIN) };
        self.producer.publish(SNAPSHOTS, &snapshot).await?;
        Ok(snapshot)
    }

    /// The latest stored snapshot of `account`.
    async fn latest_snapshot(&self, account: &str) -> Result<Option<Snapshot>, RecipeError> {
        let all: Vec<Message<Snapshot>> = self.history.read(SNAPSHOTS, ..).try_collect().await?;
        Ok(all.into_iter().map(Message::into_payload).filter(|s| s.account == account).last())
    }
}

/// The read model the projection keeps: balance per account, and the id of the last event
/// applied (events at or before it are skipped, so a redelivery applies nothing twice).
#[derive(Debug, Default)]
struct Balances(Mutex<HashMap<String, (i64, MessageId)>>);

/// The projection: applies each event to the read model and prints the new balance.
#[stream_consumer(stream = "bank.events", group = "balances", name = "balances")]
async fn project(msg: Message<AccountEvent>) -> Result<(), HandlerError> {
    let balances = msg.state::<Balances>().ok_or("no read model in the state")?;
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
    println!("balances: {} is now {}", msg.payload().account(), balance);
    Ok(())
}

/// The commands `commands` runs; a snapshot of `acc-1` is taken after the first
/// [`SNAPSHOT_AFTER`].
const COMMANDS: [Command; 10] = [
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
const SNAPSHOT_AFTER: usize = 5;

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let (command, args) = subcommand("projection");
    let result = match command.as_str() {
        "projection" => projection().await,
        "commands" => commands().await,
        "load" => load(args.first().map(String::as_str).unwrap_or("acc-1")).await,
        "cleanup" => delete_stream_keys(&[(EVENTS, &["balances"]), (SNAPSHOTS, &[])]).await.map(drop),
        other => Err(RecipeError::Usage(format!(
            "unknown command `{other}`: projection, commands, load [ACCOUNT] or cleanup"
        ))),
    };
    exit("event_sourcing", result)
}

/// Keeps the read model until Ctrl-C or SIGTERM.
async fn projection() -> Result<(), RecipeError> {
    let runtime = streamx::Runtime::builder().state(Balances::default()).build()?;
    println!("event_sourcing: projecting `{EVENTS}` on {}; Ctrl-C to stop", runtime.url());
    runtime.run().await?;
    println!("event_sourcing: stopped");
    Ok(())
}

/// Runs the commands, taking a snapshot of `acc-1` half-way.
async fn commands() -> Result<(), RecipeError> {
    let bank = Bank::connect().await?;
    for (i, command) in COMMANDS.iter().enumerate() {
        if i == SNAPSHOT_AFTER {
            let snapshot = bank.snapshot("acc-1").await?;
            println!("snapshot of acc-1 at {}: {:?}", snapshot.at, snapshot.state);
        }
        match bank.execute(command).await? {
            Ok(id) => println!("{command:?}: appended {id}"),
            Err(reason) => println!("{command:?}: refused: {reason}"),
        }
    }
    Ok(())
}

/// Rebuilds `account` from the start and from its latest snapshot.
async fn load(account: &str) -> Result<(), RecipeError> {
    let bank = Bank::connect().await?;
    let (state, last) = bank.load(account).await?;
    let last = last.map(|id| id.to_string()).unwrap_or_else(|| "-".into());
    println!("{account} replayed from the start: {state:?} (last event {last})");
    match bank.latest_snapshot(account).await? {
        Some(snapshot) => {
            let (state, _) = bank.load_from(&snapshot).await?;
            println!("{account} replayed from the snapshot at {}: {state:?}", snapshot.at);
        }
        None => println!("{account} has no snapshot"),
    }
    Ok(())
}
