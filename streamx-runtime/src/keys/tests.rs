use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

/// Every kind of `group`, with a name for messages.
fn kinds(group: &str) -> [KeyKind<'_>; 15] {
    KeyKind::all(group)
}

/// Reads a derived key back: the stream, the kind's word and the group. A decoder that gives
/// back what [`derived_key`] was given proves the derivation one-to-one.
fn decode(key: &str) -> Option<(String, String, Option<String>)> {
    let rest = key.strip_prefix('{')?;
    let close = rest.find('}')?;
    let (inside, after) = (&rest[..close], &rest[close + 1..]);
    let (stream, tail) = match after.strip_prefix(':') {
        // `{<stream>}:...`: the name is the text inside the braces.
        Some(tail) => (inside.to_string(), tail),
        // `{<tag>}#<escaped name>:...`: the name ends at the first `:`.
        None => {
            let after = after.strip_prefix('#')?;
            let (escaped, tail) = after.split_once(':')?;
            (unescape(escaped)?, tail)
        }
    };
    let (word, group) = match tail.split_once(':') {
        Some((word, group)) => (word, Some(group.to_string())),
        None => (tail, None),
    };
    Some((stream, word.to_string(), group))
}

fn unescape(escaped: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = escaped;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3)?;
        out.push(match code {
            "25" => '%',
            "3A" => ':',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// Names that broke the old derivation, and their neighbours.
const KNOWN: &[&str] = &[
    "x",
    "{x}",
    "{x}:retries",
    "{x}:retries:g",
    "x:retries",
    "orders",
    "orders}",
    "{orders}}",
    "{orders}",
    "a}b",
    "a{b}c",
    "a{b}c:retries",
    "a{b}c:retries:g",
    "x{}y",
    "{{a}",
    "{a",
    "foo{bar",
    "foo{bar}",
    "{shop}.orders",
    "{shop}#{shop}.orders",
    "{shop}#{shop}.orders:dlq",
    "{shop}.orders:dlq",
    "}",
    "{}",
    "{",
    "",
    "%",
    "%3A",
    ":",
    "#",
    "s0",
    "{s0}",
];

const GROUPS: &[&str] = &["g", "", ":", "g:h", "retries:g", "{x}", "}", "dlq", "%3A"];

#[test]
fn names_without_a_closing_brace_keep_the_documented_keys() {
    assert_eq!(default_dead_letter_stream("orders"), "{orders}:dlq");
    assert_eq!(retry_schedule("orders", "billing"), "{orders}:retries:billing");
    assert_eq!(heartbeats("orders", "billing"), "{orders}:consumers:billing");
    assert_eq!(takeover_marks("orders", "billing"), "{orders}:takeovers:billing");
    assert_eq!(member_deadlines("orders", "billing"), "{orders}:members:billing");
    assert_eq!(default_dead_letter_stream("harness.greetings"), "{harness.greetings}:dlq");
    // A `{` without a `}`, `:` and `%` in the name: still inside the braces.
    assert_eq!(default_dead_letter_stream("foo{bar"), "{foo{bar}:dlq");
    assert_eq!(retry_schedule("app:orders", "a:b"), "{app:orders}:retries:a:b");
    assert_eq!(default_dead_letter_stream("100%"), "{100%}:dlq");
}

#[test]
fn names_with_a_closing_brace_get_the_escaped_form() {
    assert_eq!(default_dead_letter_stream("{shop}.orders"), "{shop}#{shop}.orders:dlq");
    assert_eq!(retry_schedule("{shop}.orders", "billing"), "{shop}#{shop}.orders:retries:billing");
    assert_eq!(retry_schedule("{x}", "g"), "{x}#{x}:retries:g");
    assert_eq!(retry_schedule("a{b}c:retries", "g"), "{b}#a{b}c%3Aretries:retries:g");
    assert_eq!(heartbeats("{b}50%", "g"), "{b}#{b}50%25:consumers:g");
    // The README's examples.
    assert_eq!(default_dead_letter_stream("shop:{eu}"), "{eu}#shop%3A{eu}:dlq");
    assert_eq!(retry_schedule("shop:{eu}", "billing"), "{eu}#shop%3A{eu}:retries:billing");
    // No tag of its own: a filler tag in the name's slot.
    let filler = filler_tag(slot("orders}"));
    assert_eq!(default_dead_letter_stream("orders}"), format!("{{{filler}}}#orders}}:dlq"));
    assert_eq!(slot(&filler), slot("orders}"));
}

#[test]
fn the_old_collisions_are_gone() {
    assert_ne!(retry_schedule("x", "g"), retry_schedule("{x}", "g"));
    assert_ne!(default_dead_letter_stream("x"), default_dead_letter_stream("{x}"));
    // Before: the dead-letter stream of `{x}:retries:g` was the schedule of `{x}`/`g`.
    assert_ne!(default_dead_letter_stream("{x}:retries:g"), retry_schedule("{x}", "g"));
    assert_ne!(retry_schedule("a{b}c", "retries:g"), retry_schedule("a{b}c:retries", "g"));
}

#[test]
fn known_names_give_distinct_keys_in_their_slot() {
    let mut seen: HashMap<String, (&str, &str, Option<&str>)> = HashMap::new();
    for &stream in KNOWN {
        for &group in GROUPS {
            for kind in kinds(group) {
                let key = derived_key(stream, kind);
                assert_eq!(slot(&key), slot(stream), "{key:?} of {stream:?} is in another slot");
                let triple = (stream, kind.word(), kind.group());
                if let Some(other) = seen.insert(key.clone(), triple) {
                    assert_eq!(other, triple, "{key:?} derived twice");
                }
                assert_eq!(
                    decode(&key),
                    Some((stream.to_string(), kind.word().to_string(), kind.group().map(str::to_string)))
                );
            }
        }
    }
}

#[test]
fn every_slot_has_a_filler_tag() {
    for target in 0..SLOT_COUNT {
        let tag = filler_tag(target);
        assert_eq!(slot(&tag), target, "{tag}");
        assert!(!tag.contains(['{', '}']) && !tag.is_empty());
    }
    assert_eq!(filler_tag(slot("s0")), "s0");
}

#[test]
fn kind_words_are_distinct_and_plain() {
    let words: Vec<&str> = kinds("g").iter().map(KeyKind::word).collect();
    for (i, w) in words.iter().enumerate() {
        assert!(!w.is_empty() && !w.contains([':', '{', '}', '%', '#']), "{w}");
        assert!(!words[i + 1..].contains(w), "{w} twice");
    }
}

#[test]
fn slots_match_redis() {
    // Values from `CLUSTER KEYSLOT` (Redis 7.0).
    assert_eq!(slot("foo"), 12182);
    assert_eq!(slot("bar"), 5061);
    assert_eq!(slot("123456789"), 12739);
}

#[test]
fn hash_tags_follow_the_cluster_rules() {
    assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
    assert_eq!(slot("{user1000}.following"), slot("user1000"));
    assert_eq!(hash_tag("a{}b"), "a{}b");
    assert_eq!(hash_tag("{shop}.orders"), "shop");
    // Empty tag: the whole key is hashed.
    assert_eq!(slot("foo{}{bar}"), 8363);
    // Only the first `{` and the first `}` after it count.
    assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
    assert_eq!(slot("foo{bar}{zap}"), slot("bar"));
    // No closing brace: the whole key is hashed.
    assert_eq!(slot("foo{bar"), 15278);
}

/// Names from a small alphabet heavy in what matters (braces, `:`, `%`, `#`, the letters of
/// kind words and fillers), so that empty tags, stray braces, escapes and near-equal names
/// come up often.
fn name() -> impl Strategy<Value = String> {
    let chars = prop::sample::select(vec!['{', '}', ':', '%', '#', '3', 'A', 'x', 's', '0', 'é']);
    prop::collection::vec(chars, 0..10).prop_map(|cs| cs.into_iter().collect())
}

/// A name made from another: the kind of neighbour that collided before.
fn neighbour(base: String) -> impl Strategy<Value = String> {
    let wrapped = format!("{{{base}}}");
    prop_oneof![
        Just(base.clone()),
        Just(wrapped.clone()),
        Just(format!("{base}}}")),
        Just(format!("{base}:retries")),
        Just(format!("{wrapped}:retries:g")),
        Just(format!("{base}%3A")),
        name().prop_map(move |tail| format!("{base}{tail}")),
    ]
}

fn kind_of(index: usize, group: &str) -> KeyKind<'_> {
    kinds(group)[index % 5]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Every derived key is in the stream's slot, for every kind, whatever the names.
    #[test]
    fn derived_keys_share_the_streams_slot(stream in name(), group in name(), any_stream in any::<String>()) {
        for s in [&stream, &any_stream] {
            for kind in kinds(&group) {
                let key = derived_key(s, kind);
                prop_assert_eq!(slot(&key), slot(s.as_str()), "{:?} of {:?}", key, s);
            }
        }
    }

    /// The derivation reads back: the key gives the stream, the kind and the group.
    #[test]
    fn derived_keys_read_back(stream in name(), group in name(), any_stream in any::<String>(), any_group in any::<String>(), k in 0..5usize) {
        for (s, g) in [(&stream, &group), (&any_stream, &any_group)] {
            let kind = kind_of(k, g);
            let key = derived_key(s, kind);
            prop_assert_eq!(decode(&key), Some((s.clone(), kind.word().to_string(), kind.group().map(str::to_string))), "{:?}", key);
        }
    }

    /// Distinct (stream, kind, group) never give one key, near neighbours included.
    #[test]
    fn distinct_triples_give_distinct_keys(
        (a, b) in name().prop_flat_map(|a| (Just(a.clone()), neighbour(a))),
        (ga, gb) in (name(), name()),
        (ka, kb) in (0..5usize, 0..5usize),
    ) {
        for (gb, kb) in [(&gb, kb), (&ga, kb), (&ga, ka)] {
            let (kind_a, kind_b) = (kind_of(ka, &ga), kind_of(kb, gb));
            let same = a == b && kind_a == kind_b;
            prop_assert_eq!(derived_key(&a, kind_a) == derived_key(&b, kind_b), same,
                "{:?}/{:?} and {:?}/{:?}", a, kind_a, b, kind_b);
        }
    }

    /// [`hash_tag`] is what Redis Cluster hashes.
    #[test]
    fn hash_tag_is_what_the_slot_hashes(key in name()) {
        prop_assert_eq!(slot(hash_tag(&key)), slot(&key));
    }
}
