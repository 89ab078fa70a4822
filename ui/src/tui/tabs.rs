//! Which tab is shown. A leaf: the app, the demo and the event types all name tabs.
//! Imports nothing of the interface.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TabId {
    Data,
    Train,
    Privacy,
    Predict,
}

impl TabId {
    pub const ALL: [TabId; 4] = [TabId::Data, TabId::Train, TabId::Privacy, TabId::Predict];
    pub fn title(self) -> &'static str {
        match self {
            TabId::Data => "Data",
            TabId::Train => "Train",
            TabId::Privacy => "Privacy",
            TabId::Predict => "Private prediction",
        }
    }
    pub fn index(self) -> usize {
        self as usize
    }
    pub fn cycle(self, forward: bool) -> TabId {
        let i = self.index();
        TabId::ALL[if forward { (i + 1) % 4 } else { (i + 3) % 4 }]
    }
}
