-- Documents: files attached to tasks and workflow instances.
--
-- `document_contents` holds what was uploaded, once per tenant and SHA-256 digest. It is not a
-- read model: the command API writes a file's content here before it sends the command that
-- attaches it (so an attached document's content is always there), and no rebuild touches
-- it. The events (`TaskDocumentAttached`, `InstanceDocumentAttached`, ...) say which content
-- is which document; `documents` is their read model.
create table document_contents (
    tenant_id  text        not null,
    sha256     text        not null,
    size       bigint      not null,
    content    bytea       not null,
    -- when this content was first uploaded (a diagnostic: read models never use it)
    stored_at  timestamptz not null default now(),
    primary key (tenant_id, sha256)
);
-- most attachments (PDF, images, office files) are compressed already: store them as they are
alter table document_contents alter column content set storage external;

create table documents (
    id                   uuid        primary key,
    tenant_id            text        not null,
    -- the task it is attached to (null: attached to the instance itself)
    task_id              uuid,
    -- the instance it belongs to: its own, or its task's (null: an ad-hoc task's document)
    workflow_instance_id uuid,
    name                 text        not null,
    media_type           text        not null,
    size                 bigint      not null,
    sha256               text        not null,
    attached_by          text        not null,
    attached_at          timestamptz not null,
    removed_by           text,
    removed_at           timestamptz,
    removal_reason       text,
    -- 1 once attached, 2 once removed (the `ETag`)
    version              bigint      not null
);

create index documents_of_instance on documents (tenant_id, workflow_instance_id, attached_at, id);
create index documents_of_task on documents (tenant_id, task_id, attached_at, id);
create index documents_list on documents (tenant_id, attached_at, id);
