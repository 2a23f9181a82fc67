"""The CRM consumer: screen pops and the call journal, with its contacts store and contact files."""
