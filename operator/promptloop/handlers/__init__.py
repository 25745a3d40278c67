"""kopf handlers: validate, delegate, write status. Importing this package registers them."""
