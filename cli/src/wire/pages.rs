//! Pagination shared by every list: a bounded page size, and a cursor that is the key of the
//! last item given (so a walk visits each item once even as the list changes).

use super::{PAGE_ITEMS_DEFAULT, PAGE_ITEMS_MAX, QueryError};

/// One page of `items`, which come in ascending `key` order: those after `cursor`, at most
/// `limit` of them, and the cursor of the next page (`None` on the last).
pub(super) fn paged<T, K>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> K,
    limit: Option<usize>,
    cursor: &Option<String>,
) -> Result<(Vec<T>, Option<String>), QueryError>
where
    K: Ord + std::fmt::Display + std::str::FromStr,
{
    let limit = page_limit(limit)?;
    let after: Option<K> = page_cursor(cursor)?;
    let mut page = Vec::new();
    let mut more = false;
    for item in items {
        if after.as_ref().is_some_and(|after| key(&item) <= *after) {
            continue;
        }
        if page.len() == limit {
            more = true;
            break;
        }
        page.push(item);
    }
    let next = match more {
        true => page.last().map(|item| key(item).to_string()),
        false => None,
    };
    Ok((page, next))
}

/// A list's page size: `limit`, or the default; refused outside 1..=PAGE_ITEMS_MAX.
pub(super) fn page_limit(limit: Option<usize>) -> Result<usize, QueryError> {
    let limit = limit.unwrap_or(PAGE_ITEMS_DEFAULT);
    if !(1..=PAGE_ITEMS_MAX).contains(&limit) {
        return Err(QueryError::Invalid(format!(
            "limit {limit} is not within 1..={PAGE_ITEMS_MAX}"
        )));
    }
    Ok(limit)
}

/// The key a page resumes after, from the `next_cursor` the previous page gave.
pub(super) fn page_cursor<K: std::str::FromStr>(
    cursor: &Option<String>,
) -> Result<Option<K>, QueryError> {
    cursor
        .as_ref()
        .map(|text| {
            text.parse::<K>().map_err(|_| {
                QueryError::Invalid(format!(
                    "cursor {text:?} is not one this list gave out; pass a next_cursor unchanged"
                ))
            })
        })
        .transpose()
}
