// Example user transformation (RudderStack's API): mark every event sent to GA4 from the web
// source, and drop internal test traffic.
export function transformEvent(event, metadata) {
  if (event.properties && event.properties.internal_test === true) {
    return null;
  }
  event.properties = event.properties || {};
  event.properties.routed_by = "sluice";
  return event;
}
