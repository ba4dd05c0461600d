"""Notifications: events worth a human's attention, recorded, listed and sent to webhooks."""
