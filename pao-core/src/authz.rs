//! Who is asking, and what they may do. The engine checks every call through an
//! [`Authorizer`]; the server maps API tokens, OIDC tokens or gateway headers to a
//! [`Principal`].

use serde::{Deserialize, Serialize};

use crate::catalog::model::CatalogItem;

/// A person or a service account.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Principal {
    /// Stable id.
    pub id: String,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Teams the principal belongs to.
    #[serde(default)]
    pub teams: Vec<String>,
    /// Roles (`developer`, `admin`, ...).
    #[serde(default)]
    pub roles: Vec<String>,
}

impl Principal {
    /// A principal with an id, teams and roles.
    pub fn new(id: &str, teams: &[&str], roles: &[&str]) -> Principal {
        Principal {
            id: id.to_string(),
            teams: teams.iter().map(|s| s.to_string()).collect(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            ..Principal::default()
        }
    }

    /// Whether the principal has the `admin` role.
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
    }

    /// The `user` scope of templates.
    pub fn to_scope(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "teams": self.teams,
            "roles": self.roles,
        })
    }
}

/// What a principal wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// See an item or a request.
    View,
    /// Submit a request for an item.
    Submit,
    /// Approve or reject a request. The item's approvers say who may decide; the authorizer
    /// may still refuse one of them (the default authorizer never does).
    Approve,
    /// Cancel or retry a request.
    Cancel,
    /// Submit with a priority above the default (0): jump ahead of other requests.
    Prioritize,
    /// Administer the catalog and the service.
    Admin,
}

/// Decides permissions.
pub trait Authorizer: Send + Sync {
    /// May `who` do `what` on this item (and, for request-level permissions, this request
    /// owned by `owner` in `team`)?
    fn allowed(
        &self,
        who: &Principal,
        what: Permission,
        item: &CatalogItem,
        request_owner: Option<(&str, &str)>,
    ) -> bool;

    /// A key shared by every principal who may view exactly the same catalog items (item-level
    /// [`Permission::View`] and [`Permission::Submit`] depend on nothing else about them).
    /// The engine keeps one precomputed view of the catalog per key, so that listing a page
    /// costs the page and not the catalog. `None` (the default) asks for every item at each
    /// read: right for a policy that depends on more than the principal (time, an outside
    /// service).
    fn view_class(&self, who: &Principal) -> Option<String> {
        let _ = who;
        None
    }
}

/// The default policy: item `access` rules (teams and roles, `*` for all) gate view and
/// submit; requests are visible to their owner, their team and admins; admins may do all,
/// and only admins may raise a request's priority above 0. Approval is decided by the item's
/// approvers, not here.
#[derive(Debug, Clone, Copy, Default)]
pub struct ItemAccessAuthorizer;

impl Authorizer for ItemAccessAuthorizer {
    fn allowed(
        &self,
        who: &Principal,
        what: Permission,
        item: &CatalogItem,
        request_owner: Option<(&str, &str)>,
    ) -> bool {
        if who.is_admin() {
            return true;
        }
        let access = item.metadata.access.as_ref();
        let list_ok = |list: Option<&Vec<String>>, mine: &[String]| match list {
            None => true,
            Some(l) => l.iter().any(|x| x == "*" || mine.contains(x)),
        };
        let item_ok = list_ok(access.and_then(|a| a.teams.as_ref()), &who.teams)
            && list_ok(access.and_then(|a| a.roles.as_ref()), &who.roles);
        match what {
            Permission::View | Permission::Submit if request_owner.is_none() => item_ok,
            Permission::View | Permission::Cancel => match request_owner {
                Some((owner, team)) => owner == who.id || who.teams.iter().any(|t| t == team),
                None => item_ok,
            },
            Permission::Submit => item_ok,
            Permission::Approve => true,
            Permission::Prioritize | Permission::Admin => false,
        }
    }

    /// Item rules read teams and roles only: the key is those, sorted (admins see all).
    fn view_class(&self, who: &Principal) -> Option<String> {
        if who.is_admin() {
            return Some("admin".into());
        }
        let mut teams: Vec<&str> = who.teams.iter().map(String::as_str).collect();
        let mut roles: Vec<&str> = who.roles.iter().map(String::as_str).collect();
        teams.sort_unstable();
        teams.dedup();
        roles.sort_unstable();
        roles.dedup();
        // Each name with its length first, so no two lists give the same key.
        let mut key = String::new();
        for (tag, names) in [("t", teams), ("r", roles)] {
            key.push_str(tag);
            for n in names {
                key.push_str(&format!("{}:{n}", n.len()));
            }
        }
        Some(key)
    }
}
