//! What a shopper does, and in which proportions (`--mix browse=50,search=15,...`).

use std::fmt;
use std::str::FromStr;

/// One thing a shopper does. `Checkout` is two requests: create an order, then pay for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Browse,
    Search,
    Detail,
    Cart,
    Checkout,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::Browse,
        Action::Search,
        Action::Detail,
        Action::Cart,
        Action::Checkout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::Browse => "browse",
            Action::Search => "search",
            Action::Detail => "detail",
            Action::Cart => "cart",
            Action::Checkout => "checkout",
        }
    }

    /// Whether the action needs a signed-in shopper (and so registered users).
    pub fn needs_user(self) -> bool {
        matches!(self, Action::Cart | Action::Checkout)
    }
}

impl FromStr for Action {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.name() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown action '{s}' (expected one of browse, search, detail, cart, checkout)"
                )
            })
    }
}

/// Relative weights of the actions; a shopper draws each next action from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: Vec<(Action, u32)>,
    total: u32,
}

impl Mix {
    /// A mix of a single action.
    pub fn only(action: Action) -> Mix {
        Mix {
            weights: vec![(action, 1)],
            total: 1,
        }
    }

    /// The action for a draw in `0..self.total()`.
    pub fn pick(&self, draw: u32) -> Action {
        let mut left = draw % self.total;
        for &(action, weight) in &self.weights {
            if left < weight {
                return action;
            }
            left -= weight;
        }
        unreachable!("draw is below the total of the weights")
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    /// The actions with a weight above zero.
    pub fn actions(&self) -> impl Iterator<Item = Action> + '_ {
        self.weights.iter().map(|&(a, _)| a)
    }

    /// Each action's share in percent, for the report.
    pub fn percentages(&self) -> Vec<(Action, f64)> {
        self.weights
            .iter()
            .map(|&(a, w)| (a, f64::from(w) * 100.0 / f64::from(self.total)))
            .collect()
    }
}

impl Default for Mix {
    fn default() -> Self {
        "browse=50,search=15,detail=20,cart=10,checkout=5"
            .parse()
            .expect("the default mix parses")
    }
}

impl FromStr for Mix {
    type Err = String;

    /// `action=weight` pairs separated by commas; weights are relative (they need not add up
    /// to 100), an action left out or weighted 0 is never done.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut weights: Vec<(Action, u32)> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}' is not action=weight"))?;
            let action: Action = name.parse()?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("the weight of {name} ('{weight}') is not a whole number"))?;
            if weights.iter().any(|&(a, _)| a == action) {
                return Err(format!("{name} is given twice"));
            }
            if weight > 0 {
                weights.push((action, weight));
            }
        }
        let total = weights
            .iter()
            .try_fold(0u32, |sum, &(_, w)| sum.checked_add(w))
            .ok_or("the weights are too large")?;
        if total == 0 {
            return Err("the mix needs at least one action with a weight above 0".to_owned());
        }
        weights.sort_by_key(|&(a, _)| a);
        Ok(Mix { weights, total })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (action, weight)) in self.weights.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={weight}", action.name())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mix_is_mostly_browsing_and_searching() {
        let mix = Mix::default();
        assert_eq!(mix.total(), 100);
        assert_eq!(
            mix.to_string(),
            "browse=50,search=15,detail=20,cart=10,checkout=5"
        );
        let browse_and_search: u32 = (0..mix.total())
            .filter(|&d| matches!(mix.pick(d), Action::Browse | Action::Search))
            .count() as u32;
        assert_eq!(browse_and_search, 65);
    }

    #[test]
    fn every_draw_lands_on_an_action_in_proportion_to_its_weight() {
        let mix: Mix = "checkout=1, detail=3".parse().unwrap();
        let picks: Vec<Action> = (0..8).map(|d| mix.pick(d)).collect();
        assert_eq!(
            picks,
            [
                Action::Detail,
                Action::Detail,
                Action::Detail,
                Action::Checkout,
                Action::Detail,
                Action::Detail,
                Action::Detail,
                Action::Checkout
            ]
        );
        assert!(!mix.actions().any(|a| a == Action::Browse));
    }

    #[test]
    fn zero_weights_are_left_out_and_a_single_action_is_a_mix() {
        let mix: Mix = "detail=100,browse=0".parse().unwrap();
        assert_eq!(mix, Mix::only(Action::Detail).scaled(100));
        assert_eq!(mix.actions().collect::<Vec<_>>(), [Action::Detail]);
    }

    #[test]
    fn bad_mixes_are_refused_with_a_reason() {
        for (bad, reason) in [
            ("", "at least one"),
            ("browse=0", "at least one"),
            ("browse", "action=weight"),
            ("shop=5", "unknown action"),
            ("browse=-1", "whole number"),
            ("browse=1.5", "whole number"),
            ("browse=1,browse=2", "twice"),
            ("browse=4294967295,search=1", "too large"),
        ] {
            let err = bad.parse::<Mix>().unwrap_err();
            assert!(err.contains(reason), "{bad:?}: {err}");
        }
    }

    impl Mix {
        fn scaled(mut self, factor: u32) -> Mix {
            for (_, w) in &mut self.weights {
                *w *= factor;
            }
            self.total *= factor;
            self
        }
    }
}
