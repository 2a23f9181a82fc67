"""Call analytics: the call records every call consumer merges (calls), the analytics consumer, report."""
