//! The Lua scripts of the consumer loop, by name: the commands the start-up permission check
//! demands are read from their text (see [`crate::permissions`]). A script added to a worker
//! file is added here too (a unit test finds every script static).

use super::{acker, heartbeat, ordering, promoter, retries, sampler, takeover};
use crate::permissions::{EngineScript, Serves};

/// Every script of the consumer loop.
pub(crate) fn scripts() -> Vec<EngineScript> {
    vec![
        EngineScript { serves: Serves::All, name: "take-over", ident: "TAKE_OVER", script: &takeover::TAKE_OVER },
        EngineScript { serves: Serves::All, name: "heartbeat", ident: "BEAT", script: &heartbeat::BEAT },
        EngineScript { serves: Serves::All, name: "clean-up", ident: "CLEAN_UP", script: &heartbeat::CLEAN_UP },
        EngineScript { serves: Serves::All, name: "retry promotion", ident: "PROMOTE", script: &promoter::PROMOTE },
        EngineScript { serves: Serves::All, name: "retry parking", ident: "PARK", script: &retries::PARK },
        EngineScript { serves: Serves::All, name: "clear marks", ident: "CLEAR_MARKS", script: &takeover::CLEAR_MARKS },
        EngineScript { serves: Serves::All, name: "fenced ack", ident: "FENCED_ACK", script: &acker::FENCED_ACK },
        EngineScript { serves: Serves::All, name: "gauge sample", ident: "SAMPLE", script: &sampler::SAMPLE },
        EngineScript {
            serves: Serves::All,
            name: "ordered retry in place",
            ident: "RETRY_IN_PLACE",
            script: &ordering::RETRY_IN_PLACE,
        },
        EngineScript {
            serves: Serves::Dedupe,
            name: "dedupe check",
            ident: "HANDLED_AMONG",
            script: &crate::dedupe::HANDLED_AMONG,
        },
        EngineScript {
            serves: Serves::Dedupe,
            name: "dedupe ack",
            ident: "ACK_AND_RECORD",
            script: &crate::dedupe::ACK_AND_RECORD,
        },
    ]
}
