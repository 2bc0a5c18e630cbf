//! Edges of the group-only dead-letter replay, each found by trying to break it: ids beyond
//! a double's precision, a letter whose entry a consumer still holds (the wide-entry move's
//! window), stale copies of deleted letters, a letter asked twice in one call, a letter
//! whose group is gone, binary fields. Each builds the Redis state by hand (redis-cli),
//! replays with the real `DeadLetters` API against a real server, and asserts what the docs
//! promise.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestRedis, Topology};
use streamx::dead_letters::Replayed;
use streamx::testing::unique_name;
use streamx::{DeadLetters, MessageId};

fn dlq_of(stream: &str) -> String {
    streamx::keys::dead_letter_stream(stream, &streamx::DeadLetterTarget::Default).unwrap()
}

fn cli(server: &TestRedis, args: &[&str]) -> String {
    server.cli(args).unwrap().trim().to_string()
}

/// Writes a dead letter by hand, as the engine's move script does.
fn write_letter(server: &TestRedis, dlq: &str, stream: &str, id: &str, group: &str, consumer: &str) -> String {
    cli(
        server,
        &[
            "XADD",
            dlq,
            "*",
            "data",
            r#"{"n":1,"action":"ok"}"#,
            "dlq:stream",
            stream,
            "dlq:id",
            id,
            "dlq:group",
            group,
            "dlq:consumer",
            consumer,
            "dlq:deliveries",
            "1",
            "dlq:kind",
            "permanent",
            "dlq:error",
            "no",
            "dlq:at",
            "1",
        ],
    )
}

/// The script compares ids as `tonumber(ms), tonumber(seq)`: Lua numbers are doubles,
/// so sequence numbers above 2^53 that differ by one compare equal. An entry the group has
/// not read yet (after its last-delivered id) is then taken for one it read: it is
/// force-claimed into the schedule *and* still unread, so the group gets it twice (once by
/// the promoter, once by its `>` read) instead of `AlreadyDue`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_sequence_id_not_yet_read_is_already_due() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let stream = unique_name("replay-huge-seq");
    let read = "1-9007199254740992"; // 2^53
    let unread = "1-9007199254740993"; // 2^53 + 1: the same double
    cli(&server, &["XADD", &stream, read, "data", r#"{"n":0,"action":"ok"}"#]);
    cli(&server, &["XADD", &stream, unread, "data", r#"{"n":1,"action":"ok"}"#]);
    // The group has read up to `read` only (as after an XGROUP SETID back to it).
    cli(&server, &["XGROUP", "CREATE", &stream, "billing", read]);
    let dlq_key = dlq_of(&stream);
    write_letter(&server, &dlq_key, &stream, unread, "billing", "c1");
    let dlq = DeadLetters::connect(&url, &dlq_key).await.unwrap();
    let letters = dlq.list(None, 10).await.unwrap().entries;

    let outcomes = dlq.replay_letters(&letters).await.unwrap();

    let pending = cli(&server, &["XPENDING", &stream, "billing", "-", "+", "10"]);
    // What the promoter does with a due schedule entry: claim it for a running consumer.
    cli(&server, &["XCLAIM", &stream, "billing", "promoted-here", "0", unread, "JUSTID"]);
    // And what a reader does meanwhile: read new entries.
    let read_again = cli(&server, &["XREADGROUP", "GROUP", "billing", "reader", "STREAMS", &stream, ">"]);
    assert_eq!(
        outcomes,
        vec![Replayed::AlreadyDue(unread.parse::<MessageId>().unwrap())],
        "the entry is after the group's last-delivered id: it is due without a replay \
         (pending after replay: {pending:?}; then delivered again by `>`: {read_again:?})"
    );
}

/// A wide entry (over 7,900 fields) is dead-lettered in two steps by the client: XADD
/// of the letter, then `ACK_WIDE_SCRIPT` (XACK if still pending for this consumer). Between
/// the two, the letter exists while the entry is pending under the consumer giving up on it.
/// A replay in that window must not delete the letter (the second step then acknowledges
/// the entry, and the message would be neither pending nor a dead letter): it is `Held`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_letter_replayed_before_its_ack_is_not_lost() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let stream = unique_name("replay-wide-window");
    let dlq_key = dlq_of(&stream);
    let id = cli(&server, &["XADD", &stream, "*", "data", r#"{"n":1,"action":"ok"}"#]);
    cli(&server, &["XGROUP", "CREATE", &stream, "billing", "0"]);
    cli(&server, &["XREADGROUP", "GROUP", "billing", "c1", "COUNT", "1", "STREAMS", &stream, ">"]);
    // Step 1 of move_wide_entry: the client's XADD of the letter.
    let letter_id = write_letter(&server, &dlq_key, &stream, &id, "billing", "c1");
    let dlq = DeadLetters::connect(&url, &dlq_key).await.unwrap();

    let outcome = dlq.replay(letter_id.parse().unwrap()).await;
    assert!(outcome.as_ref().is_err_and(|e| e.to_string().contains("holds its entry")), "{outcome:?}");

    // Step 2 of move_wide_entry: ACK_WIDE_SCRIPT, verbatim.
    let ack_wide = r#"
local mine = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[3])
if not mine[1] then
  redis.call('XDEL', KEYS[2], ARGV[4])
  return -1
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('SREM', KEYS[3], ARGV[2], 'i:' .. ARGV[2], 'c:' .. ARGV[2])
local cap = tonumber(ARGV[5])
if cap > 0 then return redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', cap) end
return 0
"#;
    let marks = streamx::keys::derived_key(&stream, streamx::keys::KeyKind::TakeoverMarks("billing"));
    let acked =
        cli(&server, &["EVAL", ack_wide, "3", &stream, &dlq_key, &marks, "billing", &id, "c1", &letter_id, "0"]);
    let pending = cli(&server, &["XPENDING", &stream, "billing", "-", "+", "10"]);
    let letters = dlq.count().await.unwrap();
    assert!(
        !pending.is_empty() || letters > 0,
        "the message is lost: the wide ack answered {acked}; nothing pending, no letter"
    );
}

/// A stale copy of a letter (listed before someone deleted it) must not be replayed:
/// `replay_letter` "returns `None` if the letter is gone meanwhile (replayed or purged by
/// someone else)".
async fn stale_copy_after_delete(topology: Topology, dlq_key: impl Fn(&str) -> String) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let stream = unique_name("replay-stale");
    let id = cli(&server, &["XADD", &stream, "*", "data", r#"{"n":1,"action":"ok"}"#]);
    cli(&server, &["XGROUP", "CREATE", &stream, "billing", "0"]);
    cli(&server, &["XREADGROUP", "GROUP", "billing", "c1", "COUNT", "1", "STREAMS", &stream, ">"]);
    cli(&server, &["XACK", &stream, "billing", &id]);
    let dlq_key = dlq_key(&stream);
    write_letter(&server, &dlq_key, &stream, &id, "billing", "c1");
    let dlq = DeadLetters::connect(&url, &dlq_key).await.unwrap();
    let letter = dlq.list(None, 1).await.unwrap().entries.remove(0);
    // Another operator deletes (purges) it.
    assert_eq!(dlq.delete(&[letter.id]).await.unwrap(), 1);

    let replayed = dlq.replay_letter(&letter).await.unwrap();

    let pending = cli(&server, &["XPENDING", &stream, "billing", "-", "+", "10"]);
    assert_eq!(replayed, None, "a deleted letter was replayed from a stale copy; pending now: {pending:?}");
    assert!(pending.is_empty(), "pending now: {pending:?}");
}

/// A dead-letter stream in another slot (cluster): the script cannot check the letter
/// still exists, only the replay marks, so a letter deleted by another operator is
/// replayed from a stale copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_letter_in_another_slot_is_not_replayed_from_a_stale_copy() {
    stale_copy_after_delete(Topology::Cluster, |stream| {
        let other = unique_name("shared-dead-letters");
        assert_ne!(streamx::keys::slot(&other), streamx::keys::slot(stream));
        other
    })
    .await;
}

/// the same with the default dead-letter stream, in the script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_letter_in_the_same_slot_is_not_replayed_from_a_stale_copy() {
    stale_copy_after_delete(Topology::Standalone, dlq_of).await;
    stale_copy_after_delete(Topology::Cluster, dlq_of).await;
}

/// `replay_letters` keeps the outcomes in a map keyed by letter id: a letter passed
/// twice (two pages of a listing that overlapped, a UI that sent the selection twice) is
/// replayed once, but both answers say `Gone`: the replay that happened is not reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_letter_twice_in_one_call_reports_one_replay() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let stream = unique_name("replay-dup");
    let id = cli(&server, &["XADD", &stream, "*", "data", r#"{"n":1,"action":"ok"}"#]);
    cli(&server, &["XGROUP", "CREATE", &stream, "billing", "0"]);
    cli(&server, &["XREADGROUP", "GROUP", "billing", "c1", "COUNT", "1", "STREAMS", &stream, ">"]);
    cli(&server, &["XACK", &stream, "billing", &id]);
    let dlq_key = dlq_of(&stream);
    write_letter(&server, &dlq_key, &stream, &id, "billing", "c1");
    let dlq = DeadLetters::connect(&url, &dlq_key).await.unwrap();
    let letter = dlq.list(None, 1).await.unwrap().entries.remove(0);

    let outcomes = dlq.replay_letters(&[letter.clone(), letter]).await.unwrap();

    let pending = cli(&server, &["XPENDING", &stream, "billing", "-", "+", "10"]);
    assert_eq!(
        outcomes.iter().filter(|o| o.id().is_some()).count(),
        1,
        "the entry was requeued (pending: {pending:?}) but the outcomes say {outcomes:?}"
    );
}

/// A letter whose entry a consumer holds (here a live one) is kept, however often it is
/// replayed; the entry stays with its consumer (not moved to the placeholder).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_letter_whose_entry_a_consumer_holds_is_kept() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let stream = unique_name("replay-pending");
    let id = cli(&server, &["XADD", &stream, "*", "data", r#"{"n":1,"action":"ok"}"#]);
    cli(&server, &["XGROUP", "CREATE", &stream, "billing", "0"]);
    cli(&server, &["XREADGROUP", "GROUP", "billing", "c1", "COUNT", "1", "STREAMS", &stream, ">"]);
    let dlq_key = dlq_of(&stream);
    write_letter(&server, &dlq_key, &stream, &id, "billing", "c1");
    let dlq = DeadLetters::connect(&url, &dlq_key).await.unwrap();
    let letters = dlq.list(None, 1).await.unwrap().entries;
    let first = dlq.replay_letters(&letters).await.unwrap();
    let second = dlq.replay_letters(&letters).await.unwrap();
    assert_eq!(first, vec![Replayed::Held(id.parse().unwrap())]);
    assert_eq!(second, first, "still held, still kept");
    assert_eq!(dlq.count().await.unwrap(), 1);
    let err = dlq.replay_letter(&letters[0]).await.unwrap_err().to_string();
    assert!(err.contains("holds its entry"), "{err}");
    let pending = cli(&server, &["XPENDING", &stream, "billing", "-", "+", "10"]);
    assert!(pending.contains("c1") && !pending.contains("streamx:scheduled"), "{pending}");
}

/// binary field names and values (not UTF-8, with NULs) of a letter whose entry is
/// gone are published again byte for byte: from the script (letter in the same slot) and
/// from the client's second call with the fields (letter in another slot, cluster).
async fn binary_fields_survive_a_republish(topology: Topology, other_slot: bool) {
    let server = TestRedis::start(topology).unwrap();
    let url = server.url();
    let stream = unique_name("replay-binary");
    let dlq_key = if other_slot { unique_name("shared-dead-letters") } else { dlq_of(&stream) };
    let id = cli(&server, &["XADD", &stream, "*", "data", "x"]);
    cli(&server, &["XGROUP", "CREATE", &stream, "billing", "0"]);
    cli(&server, &["XREADGROUP", "GROUP", "billing", "c1", "COUNT", "1", "STREAMS", &stream, ">"]);
    cli(&server, &["XACK", &stream, "billing", &id]);
    cli(&server, &["XDEL", &stream, &id]);
    // The letter, with a binary payload and a binary field name, written from Lua.
    let write = "return redis.call('XADD', KEYS[1], '*', 'data', string.char(255, 0, 1, 200), \
                 string.char(0, 254), string.char(10, 0), 'dlq:stream', ARGV[1], 'dlq:id', ARGV[2], \
                 'dlq:group', 'billing')";
    cli(&server, &["EVAL", write, "1", &dlq_key, &stream, &id]);
    let dlq = DeadLetters::connect(&url, &dlq_key).await.unwrap();
    let letters = dlq.list(None, 1).await.unwrap().entries;
    let outcomes = dlq.replay_letters(&letters).await.unwrap();
    let Some(Replayed::Republished(new)) = outcomes.first().copied() else { panic!("{outcomes:?}") };
    let check = "local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])[1][2] \
                 local m = {} for i = 1, #e, 2 do m[e[i]] = e[i + 1] end \
                 if m['data'] == string.char(255, 0, 1, 200) and m[string.char(0, 254)] == string.char(10, 0) \
                 then return 1 else return 0 end";
    assert_eq!(cli(&server, &["EVAL", check, "1", &stream, &new.to_string()]), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_fields_survive_a_republish_in_the_script() {
    binary_fields_survive_a_republish(Topology::Standalone, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_fields_survive_a_republish_from_another_slot() {
    binary_fields_survive_a_republish(Topology::Cluster, true).await;
}

/// One letter whose group was deleted is kept and skipped: it does not stop `replay_all`
/// from replaying the letters after it (other groups, other streams).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_all_is_not_blocked_by_one_letter_of_a_deleted_group() {
    let server = TestRedis::start(Topology::Standalone).unwrap();
    let url = server.url();
    let stream = unique_name("replay-all-nogroup");
    let id = cli(&server, &["XADD", &stream, "*", "data", r#"{"n":1,"action":"ok"}"#]);
    for group in ["gone", "billing"] {
        cli(&server, &["XGROUP", "CREATE", &stream, group, "0"]);
        cli(&server, &["XREADGROUP", "GROUP", group, "c1", "COUNT", "1", "STREAMS", &stream, ">"]);
        cli(&server, &["XACK", &stream, group, &id]);
    }
    let dlq_key = dlq_of(&stream);
    write_letter(&server, &dlq_key, &stream, &id, "gone", "c1");
    write_letter(&server, &dlq_key, &stream, &id, "billing", "c1");
    cli(&server, &["XGROUP", "DESTROY", &stream, "gone"]);
    let dlq = DeadLetters::connect(&url, &dlq_key).await.unwrap();

    let all = dlq.replay_all().await;

    let pending = cli(&server, &["XPENDING", &stream, "billing", "-", "+", "10"]);
    assert_eq!(all.unwrap(), 1, "billing's letter replayed, the other skipped");
    assert!(pending.contains("streamx:scheduled"), "billing's letter is back in its queue: {pending:?}");
    assert_eq!(dlq.count().await.unwrap(), 1, "the letter of the deleted group is kept");
}
