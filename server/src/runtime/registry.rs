//! The registered classes: a class name → a way to start an actor of that
//! class's Rust type, and the settings the class was registered with
//! (`ServerBuilder::class_with`, read through `Ctx::settings`). Built once
//! by the server builder, read-only afterwards.

use std::any::Any;
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

/// A class's settings: any value, read back by its type.
pub(crate) type Settings = Arc<dyn Any + Send + Sync>;

#[derive(Clone)]
struct Class {
    factory: Arc<dyn ClassFactory>,
    settings: Option<Settings>,
}

#[derive(Clone, Default)]
pub struct Registry {
    classes: HashMap<String, Class>,
}

impl Registry {
    pub(crate) fn add<T: DurableObject>(&mut self, name: &str, settings: Option<Settings>) {
        let factory = Arc::new(Factory::<T>(PhantomData));
        self.classes
            .insert(name.to_owned(), Class { factory, settings });
    }

    /// Sets the settings of a registered class.
    pub(crate) fn set_settings(&mut self, name: &str, settings: Settings) {
        if let Some(class) = self.classes.get_mut(name) {
            class.settings = Some(settings);
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<dyn ClassFactory>> {
        self.classes.get(name).map(|class| &class.factory)
    }

    /// The settings the class was registered with, if any.
    pub(crate) fn settings(&self, name: &str) -> Option<&Settings> {
        self.classes.get(name)?.settings.as_ref()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.classes.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.classes.keys().map(String::as_str)
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}
