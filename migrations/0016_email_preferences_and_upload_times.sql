-- Which notifications each user gets by email (UserNotificationsChanged): `all` (also work
-- offered to their groups), `direct` (only work for them personally) or `none`.
alter table identity_users add column email_notifications text not null default 'all'
    check (email_notifications in ('all', 'direct', 'none'));

-- An upload of content already stored sets its `stored_at` anew (it was the first upload's
-- time): `workledger documents prune` keeps contents uploaded within its grace, so a content
-- an upload is about to refer to again is never deleted under it.
comment on column document_contents.stored_at is
    'when this content was last uploaded; documents prune keeps contents uploaded within its grace';
