//! Application state handed to handlers: values given to
//! [`RuntimeBuilder::state`](crate::RuntimeBuilder::state), looked up by type with
//! [`Message::state`](crate::Message::state). No globals needed for a database pool or a
//! producer.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

/// A set of values, one per type.
#[derive(Clone, Default)]
pub struct State {
    values: Arc<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl State {
    /// No values.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value` (replacing an earlier value of the same type).
    pub fn insert<S: Send + Sync + 'static>(&mut self, value: S) {
        Arc::make_mut(&mut self.values).insert(TypeId::of::<S>(), Arc::new(value));
    }

    /// Builder-style [`insert`](Self::insert).
    pub fn with<S: Send + Sync + 'static>(mut self, value: S) -> Self {
        self.insert(value);
        self
    }

    /// The value of type `S`, if one was given.
    pub fn get<S: Send + Sync + 'static>(&self) -> Option<&S> {
        self.values.get(&TypeId::of::<S>()).and_then(|v| v.downcast_ref::<S>())
    }

    /// How many values there are.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("values", &self.values.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_by_type() {
        let state = State::new().with(5u32).with(String::from("db"));
        assert_eq!(state.get::<u32>(), Some(&5));
        assert_eq!(state.get::<String>().map(String::as_str), Some("db"));
        assert_eq!(state.get::<u64>(), None);
        assert_eq!(state.len(), 2);
    }
}
