-- Cost (issue 18): the request's price in USD at the API's list prices,
-- computed when it is recorded from the model's price table; NULL when
-- the model has no price (or on rows from before this migration).
ALTER TABLE requests ADD COLUMN cost_usd REAL;
