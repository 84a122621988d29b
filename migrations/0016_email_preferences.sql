-- Which notifications each user gets by email (UserNotificationsChanged): `all` (also work
-- offered to their groups), `direct` (only work for them personally) or `none`.
alter table identity_users add column email_notifications text not null default 'all'
    check (email_notifications in ('all', 'direct', 'none'));
