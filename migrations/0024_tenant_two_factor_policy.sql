-- A tenant may require a second factor at every sign-in (`TenantTwoFactorPolicyChanged`,
-- kept here by the identity projector): sign-in and refresh read it.
alter table identity_tenants add column two_factor_required boolean not null default false;
