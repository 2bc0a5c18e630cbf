//! The Lua scripts of the consumer loop, by name: the commands the start-up permission check
//! demands are read from their text (see [`crate::permissions`]). A script added to a worker
//! file is added here too (a unit test finds every script static).

use super::{heartbeat, promoter, retries, sampler, takeover};
use crate::permissions::EngineScript;

/// Every script of the consumer loop.
pub(crate) fn scripts() -> Vec<EngineScript> {
    vec![
        EngineScript { name: "take-over", ident: "TAKE_OVER", script: &takeover::TAKE_OVER },
        EngineScript { name: "heartbeat", ident: "BEAT", script: &heartbeat::BEAT },
        EngineScript { name: "clean-up", ident: "CLEAN_UP", script: &heartbeat::CLEAN_UP },
        EngineScript { name: "retry promotion", ident: "PROMOTE", script: &promoter::PROMOTE },
        EngineScript { name: "retry parking", ident: "PARK", script: &retries::PARK },
        EngineScript { name: "gauge sample", ident: "SAMPLE", script: &sampler::SAMPLE },
        EngineScript { name: "dedupe check", ident: "HANDLED_AMONG", script: &crate::dedupe::HANDLED_AMONG },
        EngineScript { name: "dedupe ack", ident: "ACK_AND_RECORD", script: &crate::dedupe::ACK_AND_RECORD },
    ]
}
