# "Not applied": a Rack middleware that tells intermission (behind nginx) to hold a request
# and send it again when the application would fail it before doing anything: here, no
# database connection could be had before the application ran, so nothing was written.
# nginx's own idiom, `x-accel-redirect: @intermission_retry`, makes nginx drop this
# response and jump to the retry location with the same method and body (README
# "Unplanned outages"). The Node `http` version: examples/not-applied.mjs.
#
# Rails (config/application.rb; ActiveRecord's connection is checked first):
#   require_relative "../lib/not_applied"          # this file, copied to lib/
#   config.middleware.insert_before 0, NotApplied
# Any other Rack app: give it the check and the errors that mean "no connection":
#   use NotApplied, connect: -> { DB.test_connection }, errors: [Sequel::DatabaseConnectionError]
#
# The check runs before the application, so a failure there means the request did
# nothing. Errors raised later, by the application itself (even a lost connection after a
# write), are the application's: they pass as they are, as do its own 500 and 503 pages.
class NotApplied
  RETRY_LOCATION = "@intermission_retry"

  # The errors ActiveRecord and pg raise when no connection can be had (a pool that waited
  # in vain, ActiveRecord::ConnectionTimeoutError, is one of the first: nothing ran either).
  ACTIVE_RECORD_ERRORS = %w[ActiveRecord::ConnectionNotEstablished PG::ConnectionBad].freeze

  def initialize(app, connect: nil, errors: nil)
    @app = app
    @connect = connect || method(:active_record_connect)
    @errors = errors || ACTIVE_RECORD_ERRORS.filter_map { |name| Object.const_get(name) if Object.const_defined?(name) }
    raise ArgumentError, "NotApplied: no error classes to catch (is ActiveRecord loaded? else pass errors:)" if @errors.empty?
  end

  def call(env)
    begin
      @connect.call
    rescue *@errors
      # Nothing was applied: nginx sends the request to the retry location, and
      # intermission holds it and sends it again once the backend is ready.
      return [200, { "x-accel-redirect" => RETRY_LOCATION }, []]
    end
    @app.call(env)
  end

  private

  # Checks out a connection (connecting if need be) and gives it back to the pool.
  def active_record_connect
    ActiveRecord::Base.connection_pool.with_connection(&:verify!)
  end
end
