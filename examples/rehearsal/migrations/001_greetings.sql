CREATE TABLE greetings (id serial PRIMARY KEY, body text NOT NULL);
