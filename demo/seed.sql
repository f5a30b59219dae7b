-- The demo warehouse: a few users and accounts.
create schema if not exists app;

create or replace table app.users as
select
    'user-' || lpad(i::varchar, 3, '0') as user_id,
    i % 3 = 0 as beta_opt_in
from range(1, 31) t(i);

create or replace table app.accounts as
select
    'org-' || i as account_id,
    case when i % 4 = 0 then 'enterprise' when i % 4 = 1 then 'team' else 'free' end as plan
from range(1, 13) t(i);
