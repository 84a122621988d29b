-- The email notifier's record of the messages the mail relay accepted (or refused for good),
-- per notification (its event's id) and person. Written as each message is sent, committed
-- on its own, so a batch sent again after a failure does not repeat them. Not a read
-- model: kept for two weeks, then deleted by the notifier.
create table notification_emails (
    event_id uuid        not null,
    user_id  uuid        not null,
    outcome  text        not null check (outcome in ('sent', 'refused')),
    sent_at  timestamptz not null default now(),
    primary key (event_id, user_id)
);

create index notification_emails_sent_at on notification_emails (sent_at);
