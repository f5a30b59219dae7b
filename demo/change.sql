-- A day later: two users leave the beta, three join, and one account upgrades.
update app.users set beta_opt_in = false where user_id in ('user-003', 'user-006');
update app.users set beta_opt_in = true where user_id in ('user-001', 'user-002', 'user-004');
update app.accounts set plan = 'enterprise' where account_id = 'org-1';
