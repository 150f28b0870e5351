//! SLA classes as the balancer sees them: the validated class list shared by the class queue
//! ([`crate::ClassQueue`]) and the request classifier ([`crate::Classifier`]).
//!
//! Owns [`ClassSpec`] (one class as configured), [`ClassSet`] (the checked list: unique names,
//! distinct priorities, shares adding up to at most 100%) and [`ClassId`] (a class's position in
//! the list). Must not hold runtime state (waiters, counters: that is the queue) nor parse
//! configuration files (that is `tandem-config`, which reports the same rules with line and
//! column; the checks here only keep the core's invariants true for any caller).
//!
//! Priorities follow HAProxy's `set-priority-class`: the **lower** number is served first.
//! The default class of a frontend without one is the lowest-priority class (the largest
//! number), so unclassified traffic never overtakes classified traffic.

use std::time::Duration;

use crate::error::BalanceError;

/// Largest share a class can hold, and the largest sum of all shares: 100 percent.
pub const MAX_SHARE_PERCENT: u8 = 100;

/// Position of a class in its [`ClassSet`] (config order).
///
/// Only a `ClassSet` hands them out. An id from another set (an old config during a reload)
/// that is out of range is treated as the set's [`ClassSet::default_class`] by every method
/// that takes one, so it can never raise a request's priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassId(u16);

impl ClassId {
    /// Index in the class list, in config order (for per-class arrays in the caller).
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The id at `index`; callers pass indexes of an existing set (at most `u16::MAX`).
    pub(crate) fn from_index(index: usize) -> Self {
        Self(u16::try_from(index).unwrap_or(u16::MAX))
    }
}

/// One class as configured: the input to [`ClassSet::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassSpec {
    /// Name, unique in the set; also what a classifying header's value names.
    pub name: String,
    /// Served before every class with a larger number when all servers are full; distinct.
    pub priority: i32,
    /// Guaranteed part of each backend's capacity, in percent (0 to 100), while the class has
    /// waiting requests; unused share is available to every class.
    pub share_percent: u8,
    /// Longest a request of this class waits for a slot; `None` uses the backend's
    /// `timeout queue` ([`crate::QueueLimits::queue_timeout`]).
    pub max_queue_time: Option<Duration>,
}

impl ClassSpec {
    /// A class without share, waiting at most the backend's `timeout queue`.
    pub fn new(name: impl Into<String>, priority: i32) -> Self {
        Self {
            name: name.into(),
            priority,
            share_percent: 0,
            max_queue_time: None,
        }
    }

    /// Sets the guaranteed share, in percent.
    pub fn share(mut self, percent: u8) -> Self {
        self.share_percent = percent;
        self
    }

    /// Sets the longest queue wait.
    pub fn max_queue_time(mut self, limit: Duration) -> Self {
        self.max_queue_time = Some(limit);
        self
    }
}

/// The checked class list: non-empty, unique non-empty names, distinct priorities, each
/// share and the sum of shares at most 100%, no zero `max_queue_time`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassSet {
    classes: Vec<ClassSpec>,
    /// Class indexes from the highest priority (lowest number) to the lowest.
    order: Vec<ClassId>,
}

impl ClassSet {
    /// Checks `classes` (config order is kept: [`ClassId::index`] is the position).
    pub fn new(classes: Vec<ClassSpec>) -> Result<Self, BalanceError> {
        if classes.is_empty() {
            return Err(BalanceError::NoClasses);
        }
        let count = u16::try_from(classes.len()).map_err(|_| BalanceError::TooManyClasses {
            count: classes.len(),
        })?;
        let mut total: u32 = 0;
        for (i, c) in classes.iter().enumerate() {
            if c.name.is_empty() {
                return Err(BalanceError::EmptyClassName);
            }
            if let Some(first) = classes[..i].iter().find(|o| o.name == c.name) {
                return Err(BalanceError::DuplicateClassName {
                    class: first.name.clone(),
                });
            }
            if let Some(other) = classes[..i].iter().find(|o| o.priority == c.priority) {
                return Err(BalanceError::DuplicateClassPriority {
                    priority: c.priority,
                    first: other.name.clone(),
                    second: c.name.clone(),
                });
            }
            if c.max_queue_time.is_some_and(|d| d.is_zero()) {
                return Err(BalanceError::ZeroQueueTime {
                    what: format!("max_queue_time of class {}", c.name),
                });
            }
            total += u32::from(c.share_percent);
            if c.share_percent > MAX_SHARE_PERCENT || total > u32::from(MAX_SHARE_PERCENT) {
                return Err(BalanceError::SharesOver100 { total });
            }
        }
        let mut order: Vec<ClassId> = (0..count).map(ClassId).collect();
        order.sort_by_key(|id| classes[id.index()].priority);
        Ok(Self { classes, order })
    }

    /// Number of classes (at least one).
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    /// Always false: a set has at least one class.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// The class named `name` (exact, case-sensitive).
    pub fn id(&self, name: &str) -> Option<ClassId> {
        self.id_bytes(name.as_bytes())
    }

    /// The class whose name equals `name` byte for byte (for header values).
    pub fn id_bytes(&self, name: &[u8]) -> Option<ClassId> {
        self.classes
            .iter()
            .position(|c| c.name.as_bytes() == name)
            .map(|i| ClassId(i as u16))
    }

    /// The lowest-priority class (the largest priority number): where unclassified and
    /// unknown-class requests go.
    pub fn default_class(&self) -> ClassId {
        // `new` refuses an empty list, so `order` has a last element.
        self.order.last().copied().unwrap_or(ClassId(0))
    }

    /// `id` if it belongs to this set, else [`ClassSet::default_class`].
    pub fn resolve(&self, id: ClassId) -> ClassId {
        if id.index() < self.classes.len() {
            id
        } else {
            self.default_class()
        }
    }

    /// The spec of `id` (of the default class for an id from another set).
    pub fn spec(&self, id: ClassId) -> &ClassSpec {
        &self.classes[self.resolve(id).index()]
    }

    /// Classes in config order with their ids.
    pub fn iter(&self) -> impl Iterator<Item = (ClassId, &ClassSpec)> {
        self.classes
            .iter()
            .enumerate()
            .map(|(i, c)| (ClassId(i as u16), c))
    }

    /// Class ids from the highest priority (served first) to the lowest.
    pub fn by_priority(&self) -> &[ClassId] {
        &self.order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(specs: Vec<ClassSpec>) -> Result<ClassSet, BalanceError> {
        ClassSet::new(specs)
    }

    #[test]
    fn lower_number_is_served_first_and_the_default_is_the_last() {
        let s = set(vec![
            ClassSpec::new("bronze", 10),
            ClassSpec::new("gold", -5),
            ClassSpec::new("silver", 0),
        ])
        .unwrap();
        let names: Vec<&str> = s
            .by_priority()
            .iter()
            .map(|&id| s.spec(id).name.as_str())
            .collect();
        assert_eq!(names, ["gold", "silver", "bronze"]);
        assert_eq!(s.default_class(), s.id("bronze").unwrap());
        assert_eq!(s.id("gold").unwrap().index(), 1, "config order is kept");
    }

    #[test]
    fn unknown_names_and_foreign_ids() {
        let big = set(vec![
            ClassSpec::new("a", 1),
            ClassSpec::new("b", 2),
            ClassSpec::new("c", 3),
        ])
        .unwrap();
        let small = set(vec![ClassSpec::new("gold", 1), ClassSpec::new("bronze", 2)]).unwrap();
        assert_eq!(small.id("Gold"), None, "names are case-sensitive");
        assert_eq!(small.id("platinum"), None);
        assert_eq!(small.id_bytes(b"gold"), small.id("gold"));
        let foreign = big.id("c").unwrap();
        assert_eq!(small.resolve(foreign), small.default_class());
        assert_eq!(small.spec(foreign).name, "bronze");
    }

    #[test]
    fn rejects_what_would_break_the_queue() {
        assert_eq!(set(vec![]), Err(BalanceError::NoClasses));
        assert_eq!(
            set(vec![ClassSpec::new("", 1)]),
            Err(BalanceError::EmptyClassName)
        );
        assert_eq!(
            set(vec![ClassSpec::new("a", 1), ClassSpec::new("a", 2)]),
            Err(BalanceError::DuplicateClassName { class: "a".into() })
        );
        assert_eq!(
            set(vec![ClassSpec::new("a", 1), ClassSpec::new("b", 1)]),
            Err(BalanceError::DuplicateClassPriority {
                priority: 1,
                first: "a".into(),
                second: "b".into()
            })
        );
        assert_eq!(
            set(vec![
                ClassSpec::new("a", 1).share(60),
                ClassSpec::new("b", 2).share(41)
            ]),
            Err(BalanceError::SharesOver100 { total: 101 })
        );
        assert_eq!(
            set(vec![ClassSpec::new("a", 1).share(101)]),
            Err(BalanceError::SharesOver100 { total: 101 })
        );
        assert!(matches!(
            set(vec![ClassSpec::new("a", 1).max_queue_time(Duration::ZERO)]),
            Err(BalanceError::ZeroQueueTime { .. })
        ));
        assert!(
            set(vec![
                ClassSpec::new("a", 1).share(60),
                ClassSpec::new("b", 2).share(40)
            ])
            .is_ok(),
            "exactly 100% is allowed"
        );
    }
}
