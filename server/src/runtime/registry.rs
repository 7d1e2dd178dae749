//! The registered classes: a class name → a way to start an actor of that
//! class's Rust type. Built once by the server builder, read-only afterwards.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use super::actor::{self, ActorArgs};
use crate::object::DurableObject;

/// Starts actors of one class. Monomorphized per class so the actor loop is
/// generic over the class's type, with no dynamic dispatch per event.
pub(crate) trait ClassFactory: Send + Sync {
    fn spawn(&self, args: ActorArgs);
}

struct Factory<T>(PhantomData<fn() -> T>);

impl<T: DurableObject> ClassFactory for Factory<T> {
    fn spawn(&self, args: ActorArgs) {
        tokio::spawn(actor::run::<T>(args));
    }
}

#[derive(Clone, Default)]
pub struct Registry {
    classes: HashMap<String, Arc<dyn ClassFactory>>,
}

impl Registry {
    pub(crate) fn add<T: DurableObject>(&mut self, name: &str) {
        self.classes
            .insert(name.to_owned(), Arc::new(Factory::<T>(PhantomData)));
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<dyn ClassFactory>> {
        self.classes.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.classes.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.classes.keys().map(String::as_str)
    }
}
